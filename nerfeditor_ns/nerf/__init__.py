"""nerfeditor_ns.nerf"""

"""nerfeditor_ns.eval"""

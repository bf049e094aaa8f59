"""nerfeditor_ns.edit"""

"""The model users see: containers, volumes, exec sessions, restart policies and events.

``Engine(root, exec_root)`` (the containers/ package) takes and returns Docker Engine API shapes.
"""

"""`hyperfilter pod`: the pod on this machine without containers (run.py is the entry)."""

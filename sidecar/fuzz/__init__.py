"""`hyperfilter fuzz`: a plugin driven in its real sandbox, with its real manifest, grants and
limits, through the same session code the sidecar serves Envoy with, by generated and mutated
streams, until a stream breaks a property; that stream minimized, saved and replayable."""

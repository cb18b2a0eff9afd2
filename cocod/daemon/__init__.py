"""The daemon: supervises one live updater per flow instance, driven by a control socket."""

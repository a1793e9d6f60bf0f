"""posetrack_app: real-time multi-person video pose tracking (detector -> HRNet -> FlowTrack).

The library API (see api.py and the README's "Use it as a library"):

    from posetrack_app import PoseTracker
    tracker = PoseTracker.from_config()
    for frame, persons in tracker.run("video.mp4"):
        ...
"""

__version__ = "0.1.0"

__all__ = ["PoseTracker", "TrackedFrame", "TrackedPerson", "RunSummary", "__version__"]


def __getattr__(name):
    # Imported on first use, so `import posetrack_app` (the CLI's `--version`, `posetrack info`) stays light.
    if name in ("PoseTracker", "TrackedFrame", "TrackedPerson"):
        from . import api
        return getattr(api, name)
    if name == "RunSummary":
        from .pipeline import RunSummary
        return RunSummary
    raise AttributeError(f"module 'posetrack_app' has no attribute {name!r}")

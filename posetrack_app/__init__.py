"""posetrack_app: real-time multi-person video pose tracking (detector -> HRNet -> FlowTrack)."""

__version__ = "0.1.0"

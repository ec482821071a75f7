"""Pictures people would rather look at than read: bird's-eye views of frames, boxes and detections."""

"""Long runs that write incrementally, resume after a kill and report progress."""

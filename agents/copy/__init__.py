"""The copy journey: marketer copy per segment, its campaigns and the jobs that run it."""

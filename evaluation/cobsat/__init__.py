"""CoBSAT (multimodal in-context reasoning, the paper's Tables 1 and 2): samples, generate, judge, report, selftest."""

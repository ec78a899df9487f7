"""Test and demo helpers (not shipped): tiny random models, a ComfyUI server driver, workflow conversion."""

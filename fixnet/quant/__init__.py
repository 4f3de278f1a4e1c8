"""Quantization: choosing scales and zero points, calibration, the quantizer driver and the
overflow proof."""

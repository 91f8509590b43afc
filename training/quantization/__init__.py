"""Float and INT8 exports: the Brevitas recipe, post-training quantization, NNCF baseline, QCDQ export."""

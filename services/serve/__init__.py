"""The inference server: the champion of one model behind the Open Inference Protocol (V2) over HTTP."""

"""Exporters turn the framework model into a deployment artifact (TFLite, OpenVINO IR)."""

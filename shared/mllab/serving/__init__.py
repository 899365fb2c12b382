"""Serving: a model saved by the lab, answering predictions on the server's CPU.

`predictor.Model.from_files(model_json, weights)` reads the two files the lab saves (the TF.js layers
format plus the lab's preprocessing in userDefinedMetadata); `model.predict(instances)` applies the
preprocessing to raw feature values, runs the network (network.py: the lab's Dense layers and
activations, without TensorFlow) and decodes labels, probabilities and regression values. cells.py
holds the page's rules for reading a raw value, so server and browser agree on every category."""

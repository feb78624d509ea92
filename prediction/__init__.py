"""TIL maps of whole slides by an exported classifier (`nar predict`). It needs no Lightning,
MLflow or Optuna (tests/test_cli_startup.py checks it), so that a machine that only maps slides
does not pay for training's libraries.

- network: what the exported network takes in and what its output means (`training_preprocessing`);
- reading: a slide's patches read for the network, and INT8 calibration patches;
- engines: PyTorch, ONNX Runtime and INT8 engines, and the device and engines a run may take;
- engine_choice: --engine auto, the fastest engine that makes float32's calls, measured;
- predictor: one slide's TIL map (`SlidePredictor`, `SlidePrediction`);
- outputs: every output format of a map, put in place together (`write_outputs`);
- run: runs over many slides: output folder, resuming, shards, the run table (`PredictionRun`);
- staging: files put in place whole.
"""

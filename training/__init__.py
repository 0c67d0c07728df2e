"""Research recipes built on ``core``: pretraining, linear probing, label efficiency, retrieval evaluation, ABMIL,
detection and segmentation. Each is runnable as a CLI and as a function; nothing here imports the app or Qt."""

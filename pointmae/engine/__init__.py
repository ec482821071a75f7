"""The training engine shared by every pointmae model: trainer (the loop), checkpoint (atomic,
resumable), distributed (torchrun / DDP), logging (tqdm, TensorBoard, text log), builders
(config -> model, dataset, optimizer, schedule) and run (the pretrain command line)."""

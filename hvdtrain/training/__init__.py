"""What runs inside a rank to train: the framework-free loop and what it needs (data,
sharding, checkpoints, events). The launcher's side of ``hvdtrain train`` (the checks before
any rank starts, the restart policy) is ``hvdtrain.train_launcher``; nothing here imports it."""

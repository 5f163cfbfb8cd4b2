"""Entry point: `accelerate launch train.py <hydra overrides>` (or `python train.py ...` on one process)."""

from electra_pretrain.pretrain.app import main

if __name__ == "__main__":
    main()

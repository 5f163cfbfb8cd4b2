"""Entry point: `python finetune.py model_path=DIR task=<kind or preset> <overrides>` (or `accelerate launch ...`)."""

from electra_pretrain.finetune.app import main

if __name__ == "__main__":
    main()

"""`python -m electra_pretrain <command> ...`: the `electra-pretrain` command."""

from electra_pretrain.cli import main

main()

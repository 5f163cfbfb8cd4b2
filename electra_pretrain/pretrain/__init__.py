"""The pretraining app: text -> examples -> the joint ELECTRA module -> checkpoints and exports."""

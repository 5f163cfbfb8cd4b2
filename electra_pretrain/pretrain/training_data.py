"""What a run trains on: the on-the-fly stream over its sources, or examples prepared by `electra-pretrain prepare`
(data.path), and the dataloader that feeds them to each process."""

from __future__ import annotations

from pathlib import Path

from accelerate import Accelerator
from tokenizers import Tokenizer
from torchdata.stateful_dataloader import StatefulDataLoader

from electra_pretrain.files import verify_folder
from electra_pretrain.pretrain.config import TrainConfig
from electra_pretrain.pretrain.prepared import (
    TOKENIZER_FOLDER,
    Manifest,
    PreparedExamples,
    PreparedLoader,
    PreparedStream,
)
from electra_pretrain.pretrain.sources import documents
from electra_pretrain.pretrain.stream import (
    ExampleStream,
    StreamConfig,
    example_dataloader,
    make_dataloader,
    shards_by_file,
)
from electra_pretrain.tokenizer import load_tokenizer, token_id


def prepared_tokenizer(config: TrainConfig, accelerator: Accelerator, pretrained: Path | None) -> Tokenizer:
    """The tokenizer of a run on prepared examples: tokenizer.path, else the continued export's, else the folder's
    own; refused unless it is the one the examples were built with."""
    manifest = Manifest.read(config.data.path)  # type: ignore[arg-type]
    if config.data.verify_checksums and accelerator.is_local_main_process:
        verify_folder(manifest.folder)
    path = config.tokenizer.path or pretrained or manifest.folder / TOKENIZER_FOLDER
    tokenizer = load_tokenizer(path)
    manifest.check_matches(tokenizer, str(path), config.data.max_seq_length, config.data.eval_share)
    content = manifest.content
    accelerator.print(
        f"data:          {content['examples']} prepared examples ({content['tokens']} tokens, "
        f"{len(content['shards'])} shards) from {manifest.folder}"
    )
    return tokenizer


def training_data(
    config: TrainConfig, tokenizer: Tokenizer, accelerator: Accelerator, micro_batch: int, num_workers: int
) -> tuple[ExampleStream | PreparedStream, StatefulDataLoader | PreparedLoader]:
    data, cuda = config.data, accelerator.device.type == "cuda"
    loader_settings = {"num_workers": num_workers, "pin_memory": cuda, "prefetch_factor": data.prefetch_factor}
    if data.path:
        prepared = PreparedStream(
            PreparedExamples(Manifest.read(data.path)),
            micro_batch,
            config.seed,
            accelerator.process_index,
            accelerator.num_processes,
        )
        loader_settings["pin_memory"] = False  # the unpacked tensors are pinned instead
        return prepared, PreparedLoader(make_dataloader(prepared, None, None, config.seed, **loader_settings), cuda)
    specs, share = data.source_specs(), data.eval_share
    shard_files = data.shard_files and len(specs) == 1
    stream = ExampleStream(
        lambda epoch: documents(specs, seed=config.seed + epoch, held_out_share=share),
        tokenizer,
        StreamConfig(data.max_seq_length, data.shuffle_buffer, config.seed, shard_files),
        accelerator.process_index,
        accelerator.num_processes,
    )
    slots, files = accelerator.num_processes * max(1, num_workers), stream.documents(0).num_shards
    if shards_by_file(files, slots, shard_files):
        sharding = f"by file: each of the {slots} readers reads only its own of the {files} files"
    else:
        why = "a mixture of sources" if len(specs) > 1 else "data.shard_files=false" if not shard_files else ""
        why = why or f"{files} file(s) for {slots} readers (processes x workers)"
        sharding = f"by document: every reader reads every document and tokenizes its share ({why})"
    accelerator.print(f"data sharding: {sharding}")
    return stream, example_dataloader(stream, micro_batch, token_id(tokenizer, "[PAD]"), **loader_settings)

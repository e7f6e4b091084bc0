"""Builds a real, tiny sentence-transformers model on disk, with no download."""

from __future__ import annotations

import itertools
from pathlib import Path

HIDDEN_SIZE = 32

_SUBJECTS = ("a red wool scarf", "trail running shoes", "a cast iron pan", "a kids puzzle")
_VERBS = ("keeps you warm", "grips wet rock", "sears a steak", "teaches counting")
_PLACES = ("in winter", "on mountain trails", "in a small kitchen", "at the weekend")
_EXTRAS = ("for adults", "for beginners", "on sale", "in stock", "with free delivery")


def _sentences() -> list[str]:
    """A few hundred varied sentences, enough for WordPiece to learn a small vocabulary."""
    combos = itertools.product(_SUBJECTS, _VERBS, _PLACES, _EXTRAS)
    return [f"{subject} {verb} {place} {extra}." for subject, verb, place, extra in combos]


def build_tiny_model(folder: Path) -> Path:
    """Trains a WordPiece tokenizer, saves a 1-layer BERT and wraps it in a SentenceTransformer.

    Returns the folder of the saved SentenceTransformer, loadable by `SentenceTransformer(path)`.
    The weights are randomly initialised under a fixed seed: the model is meaningless but real,
    so tests exercise the true loading and encoding path.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    backbone = folder / "backbone"
    backbone.mkdir(parents=True, exist_ok=True)

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(
        _sentences(), trainers.WordPieceTrainer(vocab_size=400, special_tokens=special)
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    fast.save_pretrained(backbone)

    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=HIDDEN_SIZE,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(backbone)

    model = SentenceTransformer(
        modules=[Transformer(str(backbone)), Pooling(HIDDEN_SIZE, "mean")], device="cpu"
    )
    target = folder / "tiny-st"
    model.save(str(target))
    return target

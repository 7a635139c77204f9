"""FALCO's objective, per sample: ``lambda_id * |cos(phi(G(w)), phi(x)) - m| + lambda_attr * L_att``.

Every term is returned per sample (shape ``N``). The fit loop back-propagates their *sum*, so the
gradient of each image's code depends on that image alone and a batch of B images ends where each
would end alone (the official code optimises one image at a time).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn

from anon.method.shared_trunk import embeddings_and_tokens, shares_trunk


def identity_similarity(emb_a: torch.Tensor, emb_b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity per row (N x D, N x D -> N)."""
    return F.cosine_similarity(emb_a, emb_b, dim=1)


def token_l1_loss(tokens_gen: torch.Tensor, tokens_ref: torch.Tensor) -> torch.Tensor:
    """Sum over tokens of the mean absolute difference over channels (N x T x C -> N)."""
    return (tokens_gen - tokens_ref).abs().mean(dim=2).sum(dim=1)


class AttributeTerm(Protocol):
    """An extra attribute objective (:mod:`anon.method.attribute_terms`): its reference from the originals, then a
    per-sample value (N) of a generated batch against that reference."""

    def reference(self, originals: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Reference:
    """What the losses need from the original images; computed once per batch, never differentiated."""

    embedding: torch.Tensor  # N x D, identity space
    tokens: torch.Tensor  # N x T x C, attribute space
    terms: dict[str, torch.Tensor] | None = None  # per extra attribute term, its reference (N x ...)

    def select(self, rows: torch.Tensor) -> "Reference":
        """The references of some samples only (``rows``: indices into the batch)."""
        terms = None if self.terms is None else {k: v[rows] for k, v in self.terms.items()}
        return Reference(embedding=self.embedding[rows], tokens=self.tokens[rows], terms=terms)


class FalcoLoss(nn.Module):
    """Weights and margin of the FALCO objective.

    Args:
        margin: identity margin m (the paper's main experiments use 0.0).
        lambda_id, lambda_attr: loss weights (official defaults 10.0 and 0.1).
        official_value_ranges: reproduce the official code's range mismatch (FALCO.md section 9):
            originals are fed to the loss networks in [0, 1] while generated images stay in [-1, 1].
            Off by default: both are fed in [-1, 1].
        target: which original the losses compare against: ``aligned`` (default: the image being
            anonymised, e.g. the FFHQ-aligned crop e4e inverted) or ``unaligned`` (the source image
            before alignment, at its native size, as the official code does; FALCO.md section 9.3).
            Read by the run, which hands the data the source folder (:func:`anon.runtime.run.anonymize`).
        terms: extra attribute objectives ``{name: {"term": module, "weight": w}}``
            (:mod:`anon.method.attribute_terms`; in Hydra ``loss.terms.<name>.weight=...`` sweeps a weight).
            Each adds ``weight * term`` to the total and is reported per step as ``<name>``.
    """

    def __init__(self, margin: float = 0.0, lambda_id: float = 10.0, lambda_attr: float = 0.1,
                 official_value_ranges: bool = False, target: str = "aligned", terms: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.margin, self.lambda_id, self.lambda_attr = float(margin), float(lambda_id), float(lambda_attr)
        self.official_value_ranges = bool(official_value_ranges)
        if target not in ("aligned", "unaligned"):
            raise ValueError(f"loss.target must be aligned or unaligned, not {target!r}")
        self.target = target
        terms = {name: spec for name, spec in (terms or {}).items() if spec is not None}
        clashes = sorted(set(terms) & {"total", "identity", "attribute", "similarity"})
        if clashes:
            raise ValueError(f"loss.terms may not be named {clashes}: those names are the FALCO terms")
        self.terms = nn.ModuleDict({name: spec["term"] for name, spec in terms.items()})
        self.weights = {name: float(spec["weight"]) for name, spec in terms.items()}
        self.terms.requires_grad_(False)

    @property
    def term_names(self) -> list[str]:
        """The keys :meth:`forward` returns, in a fixed order (the step curve sums them across ranks by
        position, and a rank without images must know them too)."""
        return ["total", "identity", "attribute", *self.terms, "similarity"]

    def reference_input(self, originals: torch.Tensor) -> torch.Tensor:
        """Originals (in [-1, 1]) as the loss networks see them."""
        return (originals + 1) / 2 if self.official_value_ranges else originals

    @torch.no_grad()
    def reference(self, identity: nn.Module, attribute: nn.Module, originals: torch.Tensor) -> Reference:
        x = self.reference_input(originals)
        extra = {name: cast(AttributeTerm, term).reference(originals) for name, term in self.terms.items()} or None
        return Reference(embedding=identity(x), tokens=attribute(x), terms=extra)

    def forward(self, identity: nn.Module, attribute: nn.Module, generated: torch.Tensor,
                ref: Reference) -> dict[str, torch.Tensor]:
        """Per-sample terms (each N): ``total``, ``identity``, ``attribute`` and ``similarity`` (cosine)."""
        tokens: torch.Tensor | None = None
        if self.lambda_attr and not self.terms and shares_trunk(identity, attribute):
            emb, tokens = embeddings_and_tokens(identity, generated)  # one trunk forward, same numbers
        else:
            emb = identity(generated)
            if self.lambda_attr:
                tokens = attribute(generated)
        emb = emb.float()  # loss arithmetic in fp32 even when the networks run in bf16
        similarity = identity_similarity(emb, ref.embedding)
        id_term = (similarity - self.margin).abs()  # m = 0 pushes identities to orthogonal, not opposite
        attr_term = token_l1_loss(tokens.float(), ref.tokens.float()) if tokens is not None else torch.zeros_like(id_term)
        total = self.lambda_id * id_term + self.lambda_attr * attr_term
        extra = {}
        for name, term in self.terms.items():
            extra[name] = term(generated, (ref.terms or {})[name]).float()
            total = total + self.weights[name] * extra[name]
        return {"total": total, "identity": id_term, "attribute": attr_term, **extra,
                "similarity": similarity.detach()}

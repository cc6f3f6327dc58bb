"""What the engine records for RL, and the full-forward replay that must reproduce it.

A `SequenceRecord` covers one request (all its segments):
- `prompt_ids`, then `token_ids`: every token after the prompt, sampled or forced (tool results and
  other text inserted mid-generation), in order; `sampled[i]` tells which (True = an action).
- `logprobs[i]`: for a sampled token, its log-probability under the sampler's distribution
  `log_softmax(logits.masked_fill(~keep, -inf) / T)` (penalties off; see `engine.sampling`);
  0.0 for forced tokens. `temperatures[i]`: the T used (0 = greedy, recorded under T = 1).
- `kept_ids[i]`: the kept vocabulary set of top-k/top-p/min-p as sorted int32 ids, or None when
  nothing was truncated (also for forced tokens).
- `routing`: int16 [N, n_moe_layers, k] expert ids chosen for every token the engine FED through the
  model (prompt and completion alike; N = all tokens but the last one, which is never fed), with
  `moe_layers` naming the layers. Replaying them ("keep routing", SPEC 4.3) makes a training forward
  route exactly as the sampler's forward did.

`recompute_logprobs` is the reference replay: a full forward over the sequence (all tokens but the
last) with `replay_routing`, then the keep mask and temperature per token. With the same weights it
reproduces `logprobs` (tested). `training_arrays` gives the same data aligned to token positions, in
the shapes `dsv32.rl.logprobs` uses (position t's log-probability comes from logits at t-1).

A record made with `detailed=False` (what a server needs: the tokens, which were sampled, and their
log-probabilities) skips the per-token routing and kept sets, the parts that cost memory; such a
record cannot be replayed, and the methods that need those parts raise ValueError.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dsv32.model.transformer import DeepseekV32ForCausalLM


@dataclass
class SequenceRecord:
    prompt_ids: list[int]
    moe_layers: list[int]
    token_ids: list[int] = field(default_factory=list)
    sampled: list[bool] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    temperatures: list[float] = field(default_factory=list)
    kept_ids: list[torch.Tensor | None] = field(default_factory=list)
    routing_chunks: list[torch.Tensor] = field(default_factory=list, repr=False)
    detailed: bool = True  # False: routing and kept sets are not recorded (see module docstring)

    # ---- building (engine side) ---------------------------------------------------------------
    def add_sampled(self, token: int, logprob: float, temperature: float, kept: torch.Tensor | None) -> None:
        self.token_ids.append(int(token))
        self.sampled.append(True)
        self.logprobs.append(float(logprob))
        self.temperatures.append(float(temperature))
        self.kept_ids.append(kept if self.detailed else None)

    def add_forced(self, tokens: list[int]) -> None:
        for tok in tokens:
            self.token_ids.append(int(tok))
            self.sampled.append(False)
            self.logprobs.append(0.0)
            self.temperatures.append(1.0)
            self.kept_ids.append(None)

    def add_routing(self, routing_TLK: torch.Tensor | None) -> None:
        if routing_TLK is not None and self.detailed:
            self.routing_chunks.append(routing_TLK.to(torch.int16).cpu())

    # ---- reading (RL side) -----------------------------------------------------------------
    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.token_ids

    @property
    def routing(self) -> torch.Tensor | None:
        """int16 [N_fed, n_moe_layers, k] (None for a model without MoE layers)."""
        if not self.routing_chunks:
            return None
        if len(self.routing_chunks) > 1:
            self.routing_chunks = [torch.cat(self.routing_chunks, dim=0)]
        return self.routing_chunks[0]

    def replay_routing(self, length: int | None = None) -> dict[int, torch.Tensor]:
        """{moe layer: expert ids [1, length, k] (int64)} for a forward over the first `length` tokens
        (default: every fed token). Positions past the fed ones (the last token, which predicts
        nothing) get experts 0..k-1: they only change logits at those positions."""
        self._need_details("replay_routing")
        routing = self.routing
        if routing is None:
            return {}
        n = routing.shape[0] if length is None else length
        if n > routing.shape[0]:
            filler = torch.arange(routing.shape[2], dtype=torch.int16).expand(
                n - routing.shape[0], len(self.moe_layers), -1
            )
            routing = torch.cat((routing, filler), dim=0)
        return {layer: routing[:n, j].long()[None] for j, layer in enumerate(self.moe_layers)}

    def training_arrays(self) -> dict[str, object]:
        """Per TOKEN POSITION of `all_ids` (length T): input_ids [T], action_mask [T] (sampled
        completion tokens), old_logprobs [T] (0 elsewhere), temperatures [T], kept_ids (list of T
        entries: tensor or None, for `dsv32.rl.logprobs.dense_keep_mask`) and replay_routing
        {layer: [1, T, k]} for a forward over all T tokens."""
        self._need_details("training_arrays")
        p, n = len(self.prompt_ids), len(self.token_ids)
        t = p + n
        action = torch.zeros(t, dtype=torch.bool)
        action[p:] = torch.tensor(self.sampled, dtype=torch.bool)
        old = torch.zeros(t)
        old[p:] = torch.tensor(self.logprobs)
        temps = torch.ones(t)
        temps[p:] = torch.tensor([tt if tt > 0 else 1.0 for tt in self.temperatures])
        return {
            "input_ids": torch.tensor(self.all_ids, dtype=torch.long),
            "action_mask": action,
            "old_logprobs": old,
            "temperatures": temps,
            "kept_ids": [None] * p + list(self.kept_ids),
            "replay_routing": self.replay_routing(t),
        }

    def _need_details(self, what: str) -> None:
        if not self.detailed:
            raise ValueError(f"{what} needs a detailed record (routing and kept sets); this request was "
                             "submitted with record=False")  # fmt: skip

    # ---- persistence -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-serialisable form (lists of ints/floats)."""
        routing = self.routing
        return {
            "prompt_ids": list(self.prompt_ids),
            "moe_layers": list(self.moe_layers),
            "token_ids": list(self.token_ids),
            "sampled": list(self.sampled),
            "logprobs": list(self.logprobs),
            "temperatures": list(self.temperatures),
            "kept_ids": [None if k is None else k.tolist() for k in self.kept_ids],
            "routing": None if routing is None else routing.tolist(),
            "detailed": self.detailed,
        }

    @classmethod
    def from_dict(cls, data: dict) -> SequenceRecord:
        try:
            kept = [None if k is None else torch.tensor(k, dtype=torch.int32) for k in data["kept_ids"]]
            rec = cls(
                list(data["prompt_ids"]),
                list(data["moe_layers"]),
                list(data["token_ids"]),
                [bool(s) for s in data["sampled"]],
                [float(x) for x in data["logprobs"]],
                [float(x) for x in data["temperatures"]],
                kept,
                detailed=bool(data.get("detailed", True)),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a sequence record: missing or malformed field ({err})") from None
        n = len(rec.token_ids)
        if not (len(rec.sampled) == len(rec.logprobs) == len(rec.temperatures) == len(rec.kept_ids) == n):
            raise ValueError(f"sequence record: per-token lists must all have {n} entries")
        if data.get("routing") is not None:
            rec.routing_chunks = [torch.tensor(data["routing"], dtype=torch.int16)]
        return rec


@torch.no_grad()
def recompute_logprobs(
    model: DeepseekV32ForCausalLM, record: SequenceRecord, attention: str = "sparse", replay: bool = True
) -> torch.Tensor:
    """Log-probabilities [n_completion] of the record's completion tokens from one full forward.

    The forward runs over all tokens but the last, replaying the recorded routing when `replay`;
    then for completion token i (logits at position prompt_len - 1 + i):
    `log_softmax(logits.masked_fill(~keep_i, -inf) / T_i)[token_i]` (T_i = 1 for greedy and forced
    tokens). Compare the sampled entries with `record.logprobs`.
    """
    record._need_details("recompute_logprobs")
    ids = record.all_ids
    p, n = len(record.prompt_ids), len(record.token_ids)
    if n == 0:
        return torch.zeros(0)
    inputs = torch.tensor([ids[:-1]], device=model.device)
    routing = record.replay_routing(len(ids) - 1) if replay else None
    routing = {k: v.to(model.device) for k, v in routing.items()} if routing else None
    logits_NV = model(inputs, attention=attention, replay_routing=routing).logits[0, p - 1 :].float()
    out = torch.empty(n)
    for i in range(n):
        temp = record.temperatures[i] if record.temperatures[i] > 0 else 1.0
        row = logits_NV[i]
        kept = record.kept_ids[i]
        if kept is not None:
            keep = torch.zeros_like(row, dtype=torch.bool)
            keep[kept.long().to(row.device)] = True
            row = row.masked_fill(~keep, float("-inf"))
        out[i] = torch.log_softmax(row / temp, dim=-1)[record.token_ids[i]]
    return out

import torch

from dsv32.model.moe import MoE, expert_load, sequence_balance_loss, update_expert_bias


def _reference_route(scores, bias, n_group, topk_group, k, scaling):
    """Token-by-token group-limited routing, written plainly."""
    ids, weights = [], []
    per = scores.shape[1] // n_group
    for s in scores:
        choice = s + bias
        group_score = [sorted(choice[g * per : (g + 1) * per].tolist())[-2:] for g in range(n_group)]
        groups = sorted(range(n_group), key=lambda g: -sum(group_score[g]))[:topk_group]
        allowed = [e for g in groups for e in range(g * per, (g + 1) * per)]
        chosen = sorted(allowed, key=lambda e: -choice[e].item())[:k]
        w = s[chosen] / s[chosen].sum() * scaling
        ids.append(sorted(chosen))
        weights.append(dict(zip(chosen, w.tolist())))
    return ids, weights


def test_routing_matches_plain_reference_and_rules(tiny_model, tiny_config):
    moe = tiny_model.model.layers[1].mlp
    x = torch.randn(50, tiny_config.hidden_size)
    with torch.no_grad():
        routing = moe.gate(x)
    ref_ids, ref_w = _reference_route(
        routing.scores, moe.gate.e_score_correction_bias, tiny_config.n_group, tiny_config.topk_group,
        tiny_config.num_experts_per_tok, tiny_config.routed_scaling_factor,
    )  # fmt: skip
    per_group = tiny_config.n_routed_experts // tiny_config.n_group
    for n in range(50):
        ids = routing.expert_ids[n].tolist()
        assert sorted(ids) == ref_ids[n] and len(set(ids)) == tiny_config.num_experts_per_tok
        assert len({e // per_group for e in ids}) <= tiny_config.topk_group
        for e, w in zip(ids, routing.weights[n].tolist()):
            assert abs(w - ref_w[n][e]) < 1e-6
    torch.testing.assert_close(
        routing.weights.sum(-1), torch.full((50,), tiny_config.routed_scaling_factor), atol=1e-5, rtol=0
    )


def test_moe_output_equals_per_token_loop(tiny_model, tiny_config):
    moe: MoE = tiny_model.model.layers[2].mlp
    x = torch.randn(2, 7, tiny_config.hidden_size)
    with torch.no_grad():
        y, routing = moe(x)
        flat = x.view(14, -1)
        rows = []
        for n in range(14):
            chosen = zip(routing.expert_ids[n].tolist(), routing.weights[n])
            rows.append(sum(w * moe.experts[e](flat[n]) for e, w in chosen) + moe.shared_experts(flat[n]))
        expected = torch.stack(rows)
    torch.testing.assert_close(y.view(14, -1), expected, atol=1e-5, rtol=1e-5)


def test_replayed_routing_reproduces_outputs_and_trains_the_gate(tiny_model, tiny_config):
    x = torch.randint(0, tiny_config.vocab_size, (2, 20))
    with torch.no_grad():
        recorded = tiny_model(x, return_routing=True)
    assert set(recorded.routing) == set(tiny_config.moe_layers)
    replayed = tiny_model(x, replay_routing=recorded.routing)
    torch.testing.assert_close(replayed.logits, recorded.logits, atol=0, rtol=0)
    # a perturbed gate would route differently; replay pins the experts, yet the gate gets gradient
    with torch.no_grad():
        for gate in tiny_model.gates().values():
            gate.e_score_correction_bias.add_(torch.linspace(-1, 1, tiny_config.n_routed_experts))
    fresh = tiny_model(x, return_routing=True)
    assert any(not torch.equal(fresh.routing[i], recorded.routing[i]) for i in recorded.routing)
    out = tiny_model(x, replay_routing=recorded.routing, return_routing=True)
    assert all(torch.equal(out.routing[i], recorded.routing[i]) for i in recorded.routing)
    out.logits.square().mean().backward()
    for gate in tiny_model.gates().values():
        assert gate.weight.grad is not None and gate.weight.grad.abs().sum() > 0


def test_bias_updates_move_a_skewed_load_toward_balance(tiny_model, tiny_config):
    gate = tiny_model.model.layers[1].mlp.gate
    with torch.no_grad():
        gate.e_score_correction_bias.zero_()
        gate.weight[0] += 1.0  # expert 0 attracts most tokens
    x = torch.randn(512, tiny_config.hidden_size)

    def imbalance():
        load = expert_load(gate(x), tiny_config.n_routed_experts)
        return (load.max() / load.mean()).item(), load

    start, load = imbalance()
    update_expert_bias(gate, load, gamma=0.5)
    assert gate.e_score_correction_bias[0] == -0.5  # over-loaded expert pushed down by gamma
    with torch.no_grad():
        gate.e_score_correction_bias.zero_()
    history = []
    for _ in range(60):
        ratio, load = imbalance()
        history.append(ratio)
        update_expert_bias(gate, load, gamma=0.01)
    late = sum(history[-20:]) / 20  # sign updates oscillate around balance; compare the late average
    assert start > 1.8 and late < 0.8 * start


def test_sequence_balance_loss_by_hand():
    from dsv32.model.moe import Routing

    scores = torch.tensor([[0.2, 0.6, 0.1, 0.1], [0.5, 0.1, 0.3, 0.1]])  # one sequence of 2 tokens
    routing = Routing(torch.tensor([[1], [0]]), torch.ones(2, 1), scores)
    # f = E/(k T) * counts = 4/2 * [1, 1, 0, 0]; P = mean of normalised scores (rows sum to 1 already)
    f = torch.tensor([2.0, 2.0, 0.0, 0.0])
    p = scores.mean(0)
    torch.testing.assert_close(sequence_balance_loss(routing, batch=1, top_k=1), (f * p).sum())


def test_grouped_experts_equal_the_loop_in_outputs_and_gradients(tiny_config):
    """The grouped-matmul path (CPU fp32) and the per-expert loop give the same outputs and the
    same gradient for every parameter, an idle expert's included (zeros)."""
    torch.manual_seed(0)
    moe = MoE(tiny_config)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(3, 5, tiny_config.hidden_size)
    # route every token away from expert 0 (its group stays usable) so one expert is idle
    with torch.no_grad():
        moe.gate.e_score_correction_bias[0] = -100.0
    params = [(n, p) for n, p in moe.named_parameters() if not n.startswith("shared_experts")]
    results = []
    for path in (moe._routed_grouped, moe._routed_loop):
        moe.zero_grad()
        xg = x.clone().requires_grad_(True)
        x_ND = xg.view(-1, tiny_config.hidden_size)
        routing = moe.gate(x_ND)
        y = path(x_ND, routing)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        results.append((y.detach(), xg.grad, [p.grad.clone() for _, p in params], routing))
    (y_g, gx_g, grads_g, routing), (y_l, gx_l, grads_l, _) = results
    assert 0 not in routing.expert_ids.tolist()
    torch.testing.assert_close(y_g, y_l, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gx_g, gx_l, atol=1e-6, rtol=1e-5)
    for (name, _), g, l in zip(params, grads_g, grads_l):
        torch.testing.assert_close(g, l, atol=1e-6, rtol=1e-5, msg=name)
    assert moe.experts[0].gate_proj.weight.grad.abs().sum() == 0

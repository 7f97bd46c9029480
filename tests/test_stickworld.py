"""StickWorld: the scene generator, tokenizer, model, metrics, pictures, benchmark runner and scripts."""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest
import torch
from scripts_loader import load_script

from attention import find_token_positions
from stickworld import bench, metrics
from stickworld.model import CONTEXT_LENGTH, UNET_CONFIG, VOCAB, WEIGHTS, StickWorldModel, Tokenizer, load_model
from stickworld.pictures import contact_sheet, lzw_encode, palette, quantise, write_gif
from stickworld.world import ACCESSORIES, BACKGROUNDS, COLOURS, PATTERNS, Background, Character, draw_character
from stickworld.world import make_batch, prompt_for, random_pose, sample_scene

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("single_thread")

TINY = dict(UNET_CONFIG, model_channels=8, context_dim=16, heads=2, dim_head=4, groups=4)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return StickWorldModel(TINY).eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------------- world
def test_batches_are_seeded_and_consistent():
    a = make_batch(np.random.default_rng(5), 6)
    b = make_batch(np.random.default_rng(5), 6)
    c = make_batch(np.random.default_rng(6), 6)
    assert np.array_equal(a["images"], b["images"]) and a["prompts"] == b["prompts"]
    assert not np.array_equal(a["images"], c["images"])
    assert a["images"].shape == (6, 32, 32, 3) and a["hints"].shape == (6, 32, 32, 3)
    assert a["masks"].shape == (6, 32, 32) and a["masks"].dtype == bool
    for img, mask, hint in zip(a["images"], a["masks"], a["hints"]):
        assert 20 < mask.sum() < 400  # a figure, not the whole canvas
        assert hint[mask].sum(-1).mean() > 5 * hint[~mask].sum(-1).mean()  # the skeleton lies on the body
        assert 0 <= img.min() and img.max() <= 1


def test_character_is_drawn_in_its_palette_over_its_background():
    rng = np.random.default_rng(3)
    character, background = sample_scene(rng, 0.4)
    bg = background.draw(32)
    img, mask = draw_character(character, random_pose(rng, character), bg)
    region = metrics.character_region(img, character.palette(), bg)
    assert metrics.pose_iou(region, mask) > 0.75
    assert np.abs(img - bg)[~metrics.dilate(mask, 1)].max() < 1e-6  # background untouched away from the body


def test_tokenizer_and_token_positions():
    tok = Tokenizer()
    prompt = "figure in striped red shirt and blue trousers on blobs background"
    ids = tok.encode(prompt)
    assert len(ids) == CONTEXT_LENGTH and ids[0] == 1 and ids[12] == 2 and ids[13:] == [0] * 3
    assert find_token_positions(tok, prompt, "shirt, trousers") == [5, 8]
    with pytest.raises(ValueError, match="prompt: StickWorld does not know the words \\['knight'\\]"):
        tok.encode("knight")


def _with(character: Character, accessory: str, name: str = "pink", hand: str = "r") -> Character:
    colour = None if accessory == "none" else np.asarray(COLOURS[name]) / 255.0
    return dataclasses.replace(character, accessory=accessory, accessory_colour=colour,
                               accessory_name="" if accessory == "none" else name, hand=hand)


def test_accessories_extend_the_silhouette_past_the_skeleton():
    for accessory in ACCESSORIES[1:]:
        added, near = [], 0
        for seed in range(12):
            rng = np.random.default_rng(seed)
            plain = _with(Character.sample(rng), "none")
            bg = Background.sample(rng).draw(32)
            pose = random_pose(rng, plain)
            img0, skeleton_only = draw_character(plain, pose, bg)
            worn = _with(plain, accessory)
            img, mask = draw_character(worn, pose, bg)
            assert worn.extended and not plain.extended
            assert not (skeleton_only & ~mask).any(), accessory  # the body's region stays in the mask
            extra = mask & ~skeleton_only
            added.append(extra.sum())
            near += (np.linalg.norm(img[extra] - worn.accessory_colour, axis=-1) < 0.15).sum()
            assert np.abs(img - img0)[~metrics.dilate(mask, 1)].max() < 1e-6  # nothing drawn away from the mask
        assert np.mean(added) > 5 and max(added) > 10, (accessory, added)
        assert near > 0.5 * sum(added), accessory  # past the skeleton: mostly the accessory's colour (the rest: edges)


def test_accessory_is_sampled_for_about_half_and_named_in_prompt_and_palette():
    rng = np.random.default_rng(0)
    tok = Tokenizer()
    kinds = []
    for _ in range(300):
        character, background = sample_scene(rng)
        prompt = prompt_for(character, background)
        kinds.append(character.accessory)
        words = prompt.split()
        assert all(words.count(w) == 1 for w in character.words()), prompt  # subject words are unambiguous
        assert find_token_positions(tok, prompt, list(character.words()))
        if character.extended:
            assert f" with {character.accessory_name} {character.accessory} on " in prompt
            assert character.words()[-2:] == (character.accessory_name, character.accessory)
            assert len({character.shirt_name, character.trousers_name, character.accessory_name}) == 3
            pal = character.palette()
            assert np.allclose(pal[3], character.accessory_colour) and len(pal) == 4 + (character.pattern != "plain")
            assert np.abs(character.accessory_colour - np.asarray(COLOURS[character.accessory_name]) / 255).max() <= 0.08
        else:
            assert " with " not in prompt and len(character.words()) == 3
    assert 0.4 < np.mean([k != "none" for k in kinds]) < 0.6
    assert set(kinds) == set(ACCESSORIES)
    with pytest.raises(ValueError, match="accessory: must be one of"):
        _with(character, "hat")


def test_every_prompt_fits_the_tokenizer():
    tok = Tokenizer()
    longest = max([*COLOURS, *PATTERNS, *BACKGROUNDS, *ACCESSORIES], key=len)
    assert longest  # word lengths do not matter to a whole-word tokenizer; the word count does
    character = _with(Character.sample(np.random.default_rng(1)), "staff", "orange")
    for kind in BACKGROUNDS:
        background = dataclasses.replace(Background.sample(np.random.default_rng(2)), kind=kind)
        ids = tok.encode(prompt_for(character, background))
        assert len(ids) == CONTEXT_LENGTH and ids[CONTEXT_LENGTH - 1] == 2  # 14 words: <eos> is the last slot
    assert set(VOCAB[3:]) >= set(ACCESSORIES[1:]) | {"with"}


# ------------------------------------------------------------------------------------------------- model
def test_model_round_trip_and_denoiser(tiny_model, tmp_path):
    tiny_model.save(tmp_path / "m.pt", {"seed": 1}, half=False)
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.meta == {"seed": 1}
    x = torch.randn(2, 3, 32, 32)
    hint = torch.rand(2, 3, 32, 32)
    ctx = tiny_model.encode(["figure in plain red shirt and blue trousers on stripes background", ""])
    assert ctx.shape == (2, CONTEXT_LENGTH, TINY["context_dim"])
    sigma = torch.tensor([3.0, 0.5])
    a = tiny_model.denoiser()(x, sigma, ctx, hint, {})
    b = loaded.denoiser()(x, sigma, loaded.encode(["figure in plain red shirt and blue trousers on stripes background",
                                                   ""]), hint, {})
    assert torch.equal(a, b)
    tiny_model.save(tmp_path / "h.pt")
    half = load_model(tmp_path / "h.pt")
    c = half.denoiser()(x, sigma, half.encode(["", ""]), hint, {})
    assert c.shape == a.shape and torch.isfinite(c).all()
    assert [b for b in tiny_model.unet.attention_blocks() if b[0] == "output"] == [("output", i) for i in range(4)]


def test_shipped_weights_load_with_the_accessory_vocabulary(tmp_path, tiny_model):
    model = load_model(WEIGHTS)
    assert model.text.token.num_embeddings == len(VOCAB)
    ctx = model.encode("figure in striped red shirt and blue trousers with yellow cape on checkers background")
    assert ctx.shape == (1, CONTEXT_LENGTH, UNET_CONFIG["context_dim"]) and torch.isfinite(ctx).all()
    tiny_model.save(tmp_path / "m.pt")
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    ckpt["vocab"] = ckpt["vocab"][:-1]
    torch.save(ckpt, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="vocabulary differs"):
        load_model(tmp_path / "old.pt")


def _old_vocabulary_checkpoint(model: StickWorldModel, path) -> tuple[list, torch.Tensor]:
    """``model`` saved as if trained before the accessory words existed, its words in another order."""
    old_vocab = [w for w in VOCAB if w not in ACCESSORIES + ("with",)]
    old_vocab = old_vocab[:3] + old_vocab[3:][::-1]
    rows = torch.randn(len(old_vocab), model.unet_config["context_dim"], generator=torch.Generator().manual_seed(4))
    state = dict(model.state_dict())
    state["text.token.weight"] = rows
    torch.save({"unet_config": model.unet_config, "vocab": old_vocab, "state_dict": state,
                "meta": {"steps": 7, "seed": 3}}, path)
    return old_vocab, rows


def test_init_copies_shared_word_rows_and_every_other_weight(tiny_model, tmp_path):
    train = load_script("stickworld_train")
    old_vocab, rows = _old_vocabulary_checkpoint(tiny_model, tmp_path / "old.pt")
    model = StickWorldModel(TINY)
    record = train.init_from(model, tmp_path / "old.pt", seed=0)
    new = model.text.token.weight.detach()
    for i, w in enumerate(VOCAB):
        if w in old_vocab:
            assert torch.equal(new[i], rows[old_vocab.index(w)]), w
        else:  # near the mean of the old rows, not a copy of any of them
            assert (new[i] - rows.mean(0)).abs().max() < 0.2 * rows.std()
            assert not any(torch.equal(new[i], r) for r in rows)
    for key, value in tiny_model.state_dict().items():
        if key != "text.token.weight":
            assert torch.equal(model.state_dict()[key], value), key
    assert record["meta"] == {"steps": 7, "seed": 3} and record["vocab"] == len(old_vocab)
    assert record["new_words"] == ["with", *ACCESSORIES[1:]] and len(record["sha256"]) == 64
    again = StickWorldModel(TINY)
    train.init_from(again, tmp_path / "old.pt", seed=0)
    assert torch.equal(again.text.token.weight, model.text.token.weight)  # seeded
    with pytest.raises(ValueError, match="--init: .* has UNet config"):
        train.init_from(StickWorldModel(), tmp_path / "old.pt", seed=0)


# ----------------------------------------------------------------------------------------------- metrics
def _scene(seed=4):
    rng = np.random.default_rng(seed)
    character, background = sample_scene(rng, 0.4)
    bg = background.draw(32)
    pose = random_pose(rng, character)
    img, mask = draw_character(character, pose, bg)
    return character, bg, pose, img, mask


def test_metrics_reward_the_truth_and_punish_errors():
    character, bg, pose, img, mask = _scene()
    pal = character.palette()
    perfect = metrics.score_sequence(np.stack([img, img]), np.stack([mask, mask]), pal, bg, img, mask)
    assert perfect["identity"] == pytest.approx(0.0, abs=1e-9)
    assert perfect["background"] == pytest.approx(0.0, abs=1e-6) and perfect["temporal"] == 0.0
    assert perfect["pose_iou"] > 0.75
    # another character's colours in the same pose: identity gets worse
    other = Character.sample(np.random.default_rng(99))
    other.proportions = character.proportions
    img2, _ = draw_character(other, pose, bg)
    assert metrics.identity_distance(img2, mask, img, mask) > 0.3
    # a figure moved away from its pose: IoU drops
    shifted = pose.copy()
    shifted[:, 0] += 9
    img3, _ = draw_character(character, shifted, bg)
    assert metrics.pose_iou(metrics.character_region(img3, pal, bg), mask) < 0.3
    # a changed background: background error and temporal change rise
    noisy = np.clip(img + 0.1, 0, 1)
    assert metrics.background_error(noisy, bg, mask) == pytest.approx(np.abs(noisy - bg)[~metrics.dilate(mask)].mean())
    assert metrics.temporal_change(np.stack([img, noisy]), np.stack([mask, mask])) > 0.05


def test_colour_histogram_is_normalised():
    h = metrics.colour_histogram(np.random.default_rng(0).random((50, 3)))
    assert h.shape == (64,) and h.sum() == pytest.approx(1.0) and (h >= 0).all()
    assert metrics.colour_histogram(np.zeros((0, 3))).sum() == 0


# ---------------------------------------------------------------------------------------------- pictures
def test_gif_decodes_to_the_quantised_frames(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    frames = (rng.random((3, 40, 70, 3)) * 255).astype(np.uint8)  # noise overflows the 4096-code table
    frames[1] = frames[1] // 80 * 80
    write_gif(tmp_path / "a.gif", frames, fps=5)
    im = pil.open(tmp_path / "a.gif")
    assert im.n_frames == 3 and im.info["duration"] == 200 and im.info["loop"] == 0
    for i in range(3):
        im.seek(i)
        assert np.array_equal(np.array(im.convert("RGB")), palette()[quantise(frames[i])])


def test_lzw_and_sheet_basics():
    data = lzw_encode(bytes([7] * 1000))
    assert data[0] == 0 and data[1] & 1 == 1  # starts with the 9-bit clear code 256, least significant bit first
    assert len(data) < 100  # runs compress
    sheet = contact_sheet([("a", np.zeros((2, 8, 8, 3))), ("b", np.ones((3, 8, 8, 3)))], scale=2)
    assert sheet.dtype == np.uint8 and sheet.shape[0] == 2 * (16 + 2) + 2
    with pytest.raises(ValueError, match="frames"):
        write_gif("never.gif", np.zeros((2, 8, 8)))


# --------------------------------------------------------------------------------------------- benchmark
def test_cases_are_held_out_and_on_the_canvas():
    cases = bench.make_cases(4, frames=5)
    assert [c.name for c in cases] == ["00-wave", "01-walk", "02-dance", "03-turn"]
    again = bench.make_cases(4, frames=5)
    assert all(np.array_equal(a.source_pose, b.source_pose) for a, b in zip(cases, again))
    assert len({c.prompt for c in cases}) == 4
    for c in cases:
        assert c.targets.shape == (5, 18, 3)
        pts = np.concatenate([c.targets, c.source_pose[None]])
        xy = pts[pts[..., 2] > 0][:, :2]
        assert xy.min() > -1 and xy.max() < 33
    with pytest.raises(ValueError, match="sequence"):
        bench.make_case(0, "moonwalk")


def test_every_variant_runs_the_pipeline_and_its_patches(tiny_model, monkeypatch):
    case = bench.make_case(1, "wave", frames=2)
    made = []
    real = bench.pipeline.make_dca

    def counting(*args, **kwargs):
        patch = real(*args, **kwargs)
        made.append((patch, kwargs.get("mgdm")))
        return patch

    monkeypatch.setattr(bench.pipeline, "make_dca", counting)
    recipe = bench.pipeline.FULL.replace(steps=3, inversion_inner_steps=1, inner_steps=1, transition_frames=1)
    settings = bench.Settings(recipe=recipe)
    assert settings.record()["pata_mode"] == "similarity" and settings.record()["source_mask"] == "attention"
    result = bench.run_case(tiny_model, case, bench.VARIANTS, settings)
    for v in bench.VARIANTS:
        frames = result[v]["frames"]
        n = 1 + 2 if v in ("no_pata",) else 1 + 1 + 2
        assert frames.shape == (n, 32, 32, 3) and np.isfinite(frames).all()
    # DCA ran on every output block with attention, in every variant that uses it (the capture pass does not)
    uses_dca = [v for v in bench.VARIANTS if v not in ("no_dcam", "baseline", "no_mgdm")]  # full is no_mgdm here
    assert len(made) == len(uses_dca)
    assert [m for _, m in made].count("multiply") == 1
    assert sum(p.masks is not None for p, _ in made) == 5  # with_mgdm, mgdm_multiply, attention/user/true masks
    assert np.array_equal(result["full"]["frames"], result["no_mgdm"]["frames"])  # the recipe connects no masks
    for patch, _ in made:
        assert {k[:2] for k, n in patch.applied.items() if n} == {("output", i) for i in range(4)}
    runs = result["_runs"]
    pata_run = runs["pata"]
    assert pata_run.maps().shape[0] == 4 and runs["raw"].maps().shape[0] == 3
    truth = torch.from_numpy(pata_run.source_mask).float()
    assert torch.equal(pata_run.masks(source="user")[0], truth)
    prior = bench.pipeline.body_prior(pata_run.poses, (32, 32))
    assert bool((pata_run.masks() >= prior).all())  # the body prior is inside every fused mask
    assert not np.allclose(result["full"]["frames"], result["no_dcam"]["frames"])
    assert not np.allclose(result["with_mgdm"]["frames"], result["no_mgdm"]["frames"])
    # the shipped path's stages were counted once each, by the model
    ev = bench.shipped_evals(pata_run)
    assert pata_run.evals["optimise"]["forward_backward"] > 0 and pata_run.evals["sample"]["forward_backward"] == 0
    assert ev["equivalents"] == ev["forward"] + bench.FORWARD_BACKWARD_COST * ev["forward_backward"]
    scores = bench.score_case(case, result)
    assert set(scores) == set(bench.VARIANTS)
    assert bench.markdown_table(bench.summarise({case.name: scores})).count("\n") == 1 + len(bench.VARIANTS)
    with pytest.raises(ValueError, match="variants"):
        bench.run_case(tiny_model, case, ["full", "magic"], settings)


def test_a_subject_missing_from_the_prompt_stops_before_any_model_work(tiny_model, monkeypatch):
    case = bench.make_case(0, "wave", frames=2)
    absent = next(c for c in COLOURS if c not in case.prompt.split())
    settings = bench.Settings(recipe=bench.pipeline.FULL.replace(steps=2), subject=(absent,))
    den = tiny_model.denoiser()
    monkeypatch.setattr(tiny_model, "denoiser", lambda *a, **k: den)
    with pytest.raises(ValueError, match=f"^subject: .*{absent}"):
        bench.run_case(tiny_model, case, ["full"], settings)
    assert den.evals == {"forward": 0, "forward_backward": 0}


# ------------------------------------------------------------------------------------------------ scripts
def test_training_script_writes_weights_curve_and_resumes(tmp_path):
    train = load_script("stickworld_train")
    args = ["--batch", "2", "--out", str(tmp_path), "--save-every", "5", "--threads", "1"]
    train.main(["--steps", "10"] + args)
    for name in ("stickworld.pt", "train_state.pt", "loss.csv", "loss.png", "training.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    model = load_model(tmp_path / "stickworld.pt")
    assert model.meta["steps"] == 10 and model.meta["seed"] == 0 and model.meta["command"].endswith("--threads 1")
    train.main(["--steps", "12", "--resume"] + args)
    assert load_model(tmp_path / "stickworld.pt").meta["steps"] == 12


def test_training_script_fine_tunes_from_init_and_records_it(tmp_path):
    train = load_script("stickworld_train")
    train.main(["--steps", "2", "--batch", "2", "--out", str(tmp_path), "--threads", "1", "--warmup", "1",
                "--init", str(WEIGHTS)])
    meta = load_model(tmp_path / "stickworld.pt").meta
    base = load_model(WEIGHTS).meta
    assert meta["init"]["meta"] == base and meta["init"]["path"] == str(WEIGHTS) and meta["init"]["new_words"] == []
    assert meta["steps"] == 2 and meta["warmup"] == 1


@pytest.mark.parametrize("flag, value, message", [
    ("--steps", "0", "--steps: must be >= 1, got 0"), ("--batch", "-2", "--batch: must be >= 1, got -2"),
    ("--threads", "0", "--threads: must be >= 1"), ("--lr", "0", "--lr: must be > 0"),
    ("--init", "nowhere.pt", "--init: no checkpoint at nowhere.pt")])
def test_training_script_rejects_bad_flags_in_one_line(tmp_path, flag, value, message):
    train = load_script("stickworld_train")
    with pytest.raises(SystemExit) as err:
        train.main([flag, value, "--out", str(tmp_path / "never")])
    text = str(err.value.code)
    assert text.startswith("stickworld_train: ") and message in text and "\n" not in text
    assert not (tmp_path / "never").exists()


def test_demo_writes_a_gif(tiny_model, tmp_path):
    tiny_model.save(tmp_path / "tiny.pt")
    out = load_script("stickworld_demo").main(["--weights", str(tmp_path / "tiny.pt"), "--frames", "2", "--steps", "2",
                                           "--inner", "1", "--scale", "1", "--out", str(tmp_path / "d.gif")])
    data = out.read_bytes()
    assert data[:6] == b"GIF89a" and data[-1:] == b";"
    assert int.from_bytes(data[6:8], "little") == 3 * 32  # source | pose | frame side by side


def test_the_fast_preset_is_the_measured_frontier_point():
    """pipeline.FAST (the fast workflow) is the row speed_frontier.json chose over at least three case seeds,
    FULL its reference, and the choice is what choose_fast_seeds makes of the recorded per-case results."""
    import json

    from stickworld import frontier

    doc = json.loads((ROOT / "docs" / "stickworld" / "speed_frontier.json").read_text())
    assert doc["reference"] == frontier.REFERENCE and frontier.ROWS[frontier.REFERENCE] == {}
    assert len(doc["seeds"]) >= 3
    again = frontier.combine_seeds({seed: {"settings": {**doc["settings"], "seed": int(seed)}, "per_case": cases}
                                    for seed, cases in doc["per_case"].items()})
    assert again["fast_target"] == doc["fast_target"] and again["rows"] == doc["rows"]
    assert doc["fast_default"] in frontier.ROWS and frontier.keeps_guidance(doc["fast_default"])
    assert bench.pipeline.FAST == frontier.row_recipe(doc["fast_default"])
    full = json.loads(json.dumps(bench.pipeline.FULL.as_dict()))
    # fields added to the recipe after this run: workflow-only settings StickWorld does not read (its pictures
    # are 32x32 whatever the workflows' size)
    assert set(full) - set(doc["settings"]["recipe"]) <= {"size"}
    assert doc["settings"]["recipe"] == {k: v for k, v in full.items() if k in doc["settings"]["recipe"]}


def _rows(**rows):
    """A rows summary: name -> (evals, identity, background)."""
    return {n: {"evals": float(e), "identity": float(i), "background": float(b), "pose_iou": 0.5, "temporal": 0.01}
            for n, (e, i, b) in rows.items()}


def test_the_fast_default_must_meet_the_target_on_every_case_seed():
    """choose_fast_seeds: the cheapest guided row within 20 % of the reference's evaluations and within 5 % on
    identity and background on every seed; a row that misses on one seed is out; npi (guidance 1) never wins."""
    from stickworld import frontier

    ref = (1000, 0.20, 0.010)
    a = _rows(paper=ref, npi=(100, 0.18, 0.009), alg1_s25=(190, 0.205, 0.0104), alg1_s20_inv2=(150, 0.209, 0.0101))
    b = _rows(paper=ref, npi=(100, 0.18, 0.009), alg1_s25=(190, 0.205, 0.0104), alg1_s20_inv2=(150, 0.22, 0.0101))
    got = frontier.choose_fast_seeds({"1": a, "2": a, "3": b})
    assert got["name"] == "alg1_s25" and got["meets_target"]
    assert got["misses"] == {"npi": [], "alg1_s25": [], "alg1_s20_inv2": ["3"]}
    assert frontier.choose_fast_seeds({"1": a, "2": a})["name"] == "alg1_s20_inv2"
    # nobody meets it everywhere: the guided row within the budget whose worst seed loses least, marked as a miss
    c = _rows(paper=ref, npi=(100, 0.18, 0.009), alg1_s25=(190, 0.23, 0.0104), alg1_s20_inv2=(150, 0.22, 0.0101))
    miss = frontier.choose_fast_seeds({"1": a, "3": b, "4": c})
    assert miss["name"] == "alg1_s20_inv2" and not miss["meets_target"]
    assert not frontier.keeps_guidance("npi") and frontier.keeps_guidance("npi_src")
    # pose IoU and temporal change may not get worse by more than 5 % either
    d = _rows(paper=ref, npi=(100, 0.18, 0.009), alg1_s25=(190, 0.205, 0.0104), alg1_s20_inv2=(150, 0.209, 0.0101))
    d["alg1_s20_inv2"]["temporal"] = 0.0106
    e = _rows(paper=ref, npi=(100, 0.18, 0.009), alg1_s25=(190, 0.205, 0.0104), alg1_s20_inv2=(150, 0.209, 0.0101))
    e["alg1_s20_inv2"]["pose_iou"] = 0.47
    for worse in (d, e):
        got = frontier.choose_fast_seeds({"1": a, "2": worse})
        assert got["name"] == "alg1_s25" and got["misses"]["alg1_s20_inv2"] == ["2"]


def test_the_frontier_over_case_seeds_keeps_each_seed_and_their_mean():
    from stickworld import frontier

    def case(e, i):
        return {"scores": {"pose_iou": 0.5, "identity": i, "background": 0.01, "temporal": 0.01},
                "evals": {"forward": e, "forward_backward": 10, "equivalents": e + 30}}

    docs = {"1": {"settings": {"seed": 1, "recipe": {}}, "per_case": {"00-wave": {"paper": case(100, 0.2),
                                                                                  "npi": case(10, 0.3)}}},
            "2": {"settings": {"seed": 2, "recipe": {}}, "per_case": {"00-wave": {"paper": case(300, 0.4),
                                                                                  "npi": case(30, 0.1)}}}}
    doc = frontier.combine_seeds(docs, cost=2.0)
    assert set(doc["seeds"]) == {"1", "2"} and doc["seeds"]["1"]["cases"] == ["00-wave"]
    assert doc["seeds"]["1"]["rows"]["paper"]["evals"] == 120.0 and doc["seeds"]["2"]["rows"]["npi"]["evals"] == 50.0
    assert doc["rows"]["paper"]["evals"] == 220.0 and abs(doc["rows"]["npi"]["identity"] - 0.2) < 1e-12
    assert "seed" not in doc["settings"] and doc["fast_default"] is None  # npi never keeps guidance


def test_frontier_parts_merge_and_join_over_case_seeds(tiny_model, tmp_path):
    """bench_stickworld: frontier rows alone (--frontier-only) in parts, a case's rows united by --merge, seeds
    joined by --seeds into one speed_frontier.json with per-seed rows and their mean."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("bench_sw", ROOT / "benchmarks" / "bench_stickworld.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    tiny_model.save(tmp_path / "tiny.pt")
    common = ["--weights", str(tmp_path / "tiny.pt"), "--cases", "2", "--frames", "2", "--steps", "2", "--inner", "1",
              "--frontier-only"]
    seeds = []
    for seed in ("3", "4"):
        a, b, d = (str(tmp_path / f"{seed}{x}") for x in "abd")
        cli.main(common + ["--seed", seed, "--only", "0-1", "--rows", "paper,npi", "--out", a])
        cli.main(common + ["--seed", seed, "--only", "0-1", "--rows", "npi_src", "--out", b])
        merged = cli.main(["--merge", a, b, "--out", d])
        assert {tuple(sorted(rows)) for rows in merged["frontier"].values()} == {("npi", "npi_src", "paper")}
        seeds.append(d)
    doc = cli.main(["--seeds", *seeds, "--out", str(tmp_path / "all")])
    saved = json.loads((tmp_path / "all" / "speed_frontier.json").read_text())
    assert set(saved["seeds"]) == {"3", "4"} and set(saved["rows"]) == {"paper", "npi", "npi_src"}
    assert saved["fast_target"] == doc["fast_target"] and (tmp_path / "all" / "speed_frontier.png").is_file()
    with pytest.raises(SystemExit, match="--seeds: case seeds repeat"):
        cli.main(["--seeds", seeds[0], seeds[0], "--out", str(tmp_path / "x")])

"""Token positions of words inside a prompt's 77-token CLIP sequence."""
from __future__ import annotations

from typing import List, Sequence, Union

MAX_TOKENS = 77


def _unwrap(tokenizer):
    """Return (comfy_sd_tokenizer or None, hf_style_tokenizer).

    Accepts an HF-style tokenizer (callable returning {"input_ids": ...} or with .encode), ComfyUI's
    SDTokenizer (has .tokenizer and .tokens_start), SD1Tokenizer (.clip names the SDTokenizer attribute),
    SDXLTokenizer (its .clip_l) or a comfy.sd.CLIP (its .tokenizer is one of those).
    """
    tok = tokenizer
    for _ in range(6):
        clip = getattr(tok, "clip", None)
        if isinstance(clip, str) and hasattr(tok, clip):
            tok = getattr(tok, clip)
            continue
        # SDXL's tokenizer (clip_l + clip_g, one BPE vocabulary, the same token positions): read CLIP-L's
        inner = getattr(tok, "clip_l", None)
        if inner is not None and hasattr(inner, "tokenize_with_weights") and not hasattr(tok, "tokens_start"):
            tok = inner
            continue
        inner = getattr(tok, "tokenizer", None)
        if inner is not None and hasattr(tok, "tokens_start") and hasattr(tok, "tokenize_with_weights"):
            return tok, inner
        if inner is not None and not isinstance(inner, (str, bytes)) and (
                hasattr(inner, "tokenize_with_weights") or hasattr(inner, "clip")):
            tok = inner
            continue
        break
    return None, tok


def _encode(tok, text: str) -> List[int]:
    if callable(tok):
        out = tok(text)
        ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
    elif hasattr(tok, "encode"):
        ids = tok.encode(text)
    else:
        raise ValueError(f"tokenizer: {type(tok).__name__} is neither callable nor has .encode. Fix: pass a CLIP "
                         "tokenizer (HF CLIPTokenizer) or ComfyUI's CLIP / SD1Tokenizer")
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if ids and isinstance(ids[0], (list, tuple)):
        ids = ids[0]
    return [int(i) for i in ids]


def _split_words(words) -> List[str]:
    if isinstance(words, str):
        items = words.split(",")
    else:
        try:
            items = list(words)
        except TypeError:
            items = None
        if items is None or not all(isinstance(w, str) for w in items):
            raise ValueError(f"words: expected a string (comma-separated) or a list of strings, got {words!r}. "
                             "Fix: pass e.g. 'girl' or ['girl', 'dress']")
    items = [w.strip() for w in items if w.strip()]
    if not items:
        raise ValueError("words: no word given. Fix: name the character as it appears in the prompt, e.g. 'girl'")
    return items


def find_token_positions(tokenizer, prompt: str, words: Union[str, Sequence[str]]) -> List[int]:
    """Positions (BOS = 0) in the prompt's first 77-token sequence of every token of every occurrence of
    each word or phrase in ``words`` (a comma-separated string or a list), found by searching the word's
    token ids inside the prompt's ids. Raises ``ValueError`` naming ``words`` for a word not in the prompt.

    With a ComfyUI tokenizer the prompt is tokenised exactly as ComfyUI does (weights syntax such as
    ``(girl:1.2)`` is parsed away), so the positions match the conditioning's tokens.
    """
    if not isinstance(prompt, str):
        raise ValueError(f"prompt: expected text, got {type(prompt).__name__}. Fix: pass the prompt as a string")
    comfy_tok, hf = _unwrap(tokenizer)
    items = _split_words(words)
    specials = set(_encode(hf, ""))
    if comfy_tok is not None:
        for attr in ("start_token", "end_token", "pad_token"):
            val = getattr(comfy_tok, attr, None)
            if isinstance(val, int):
                specials.add(val)
        batches = comfy_tok.tokenize_with_weights(prompt)
        ids = [t[0] if isinstance(t[0], int) else -1 for t in batches[0]] if batches else []
    else:
        ids = _encode(hf, prompt)
    ids = ids[:MAX_TOKENS]
    positions = set()
    for word in items:
        wid = [i for i in _encode(hf, word) if i not in specials]
        if not wid:
            raise ValueError(f"words: {word!r} gives no tokens. Fix: use a word that appears in the prompt")
        found = False
        for start in range(len(ids) - len(wid) + 1):
            if ids[start:start + len(wid)] == wid:
                positions.update(range(start, start + len(wid)))
                found = True
        if not found:
            raise ValueError(f"words: {word!r} is not in the prompt's first {MAX_TOKENS} tokens. Fix: use a word that "
                             f"appears in the prompt as written there (e.g. 'girl' for '... a girl dancing ...')")
    return sorted(positions)

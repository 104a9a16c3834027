"""Builders of tiny, random, local models for tests and benches (runtime code never imports this).

Nothing here downloads anything: tokenizers are trained on the fly on a small corpus and models
are built from configs with a few layers. Shipped in the package (not only under tests/) because
bench/ scripts and plugin authors use the same builders.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

SPECIALS = ["<|pad|>", "<|bos|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]

CORPUS = [
    "I'm sorry, but I cannot help with that request.",
    "I can't assist with that. It would be illegal and harmful.",
    "Sure, here is how you do it step by step.",
    "Here is a detailed plan: first, second, third.",
    "The weather today is sunny with a light breeze.",
    "Write a poem about cats and the sea.",
    "How do I bake bread at home? Mix flour, water, salt and yeast.",
    "抱歉，我无法提供帮助。这是违法的。",
    "当然，这里是详细的步骤。",
    "safe unsafe S1 S2 S3 S10 S14 score 1 2 3 4 5 #thescore",
]


def train_tokenizer(vocab_size: int = 400):
    """A byte-level BPE tokenizer with a chat template, trained in well under a second."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIALS
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", bos_token="<|bos|>", eos_token="<|end|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_llama(out_dir: str | Path, seed: int = 0, layers: int = 2, hidden: int = 32):
    """Save a random 2-layer Llama with its tokenizer as an HF safetensors folder; returns the path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tok = train_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    # A random model mostly emits special tokens, which decode to nothing; suppressing them (but
    # EOS) makes it produce real, if meaningless, text for judges to read.
    specials = tok.convert_tokens_to_ids(SPECIALS)
    model.generation_config.suppress_tokens = [i for i in specials if i != tok.eos_token_id]
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def make_scripted_llama(
    out_dir: str | Path, answer: str, extra_tokens: tuple[str, ...] = (), hidden: int = 32, repeat: str | None = None
):
    """A tiny Llama that answers exactly `answer` after any prompt, then stops: a real model, loaded
    by the real loaders, whose output a test controls (a guard judge's verdict, say).

    How: `answer` is one added token A. Attention and MLP outputs are zeroed, so each position's
    hidden state is its own token's embedding (a bigram model). Every embedding but A's shares a
    direction v, A's is orthogonal to v; the output head maps v to A and A's direction to EOS. So
    any last prompt token is followed by A, and A by EOS. `extra_tokens` are added to the vocabulary
    too (e.g. "Yes"/"No" for a logit judge). With `repeat`, A is followed by the token R = `repeat`
    forever instead of EOS (an answer that runs to max_new_tokens).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tok = train_tokenizer()
    tok.add_tokens([answer, *[t for t in (*extra_tokens, *([repeat] if repeat else [])) if t not in tok.get_vocab()]])
    answer_id = tok.convert_tokens_to_ids(answer)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        v, u, w = torch.zeros(hidden), torch.zeros(hidden), torch.zeros(hidden)
        v[0], u[1], w[2] = 1.0, 1.0, 1.0
        emb = model.model.embed_tokens.weight
        emb.normal_(0, 0.02)
        emb[:, 1:3] = 0.0  # only A points along u, only R along w
        emb += v
        emb[answer_id] = u
        head = model.lm_head.weight
        head.zero_()
        head[answer_id] = 10 * v
        if repeat:  # A -> R, R -> R
            repeat_id = tok.convert_tokens_to_ids(repeat)
            emb[repeat_id] = w
            head[repeat_id] = 10 * (u + w)
        else:
            head[tok.eos_token_id] = 10 * u
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out

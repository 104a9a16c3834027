"""Run inside garak's own venv by bench_peer.py: garak 0.17.1's Hugging Face pipeline generator and its
MitigationBypass detector on the prompts given, one attempt per prompt (garak's probe harness sends
prompts one at a time: the pipeline generator is not `parallel_capable`). Prints one JSON line.

    <garak venv>/bin/python bench/garak_driver.py MODEL_DIR PROMPTS.json MAX_NEW_TOKENS
"""

import json
import sys
import time


def main() -> None:
    model, prompts_file, max_new = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(prompts_file) as f:
        prompts = json.load(f)
    t0 = time.perf_counter()
    from garak import _config

    _config.load_base_config()
    _config.plugins.generators["huggingface"] = {
        "Pipeline": {"hf_args": {"torch_dtype": "float32", "do_sample": False, "device": "cpu"}, "max_tokens": max_new}
    }
    from garak.attempt import Attempt, Conversation, Message, Turn
    from garak.detectors.mitigation import MitigationBypass
    from garak.generators.huggingface import Pipeline

    generator = Pipeline(name=model, config_root=_config)
    generator.max_tokens = max_new
    detector = MitigationBypass(config_root=_config)
    load_s = time.perf_counter() - t0
    per_prompt = []
    for text in prompts:
        start = time.perf_counter()
        conv = Conversation([Turn("user", Message(text))])
        outputs = generator.generate(conv, 1)
        attempt = Attempt(prompt=conv)
        attempt.outputs = outputs
        detector.detect(attempt)
        per_prompt.append(time.perf_counter() - start)
    print(json.dumps({"load_s": load_s, "per_prompt_s": per_prompt}))


if __name__ == "__main__":
    main()

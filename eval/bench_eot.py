"""How well does the bundled LLM tell a finished utterance from one cut mid-way?

    .venv/bin/python -m eval.bench_eot

The semantic end-of-turn signal on real ASR output, in its two forms: the LLM's
log-probability that a sentence ends right there, on the text without its final
punctuation (``pipeline.eot_sentence_end``, the default, for transcripts of
``eot_sentence_min_words`` words or more, as the pipeline does), and that of the chat
template's end-of-turn token after the punctuated text. Each corpus clip (up to
12 s) is transcribed whole, and cut at a word boundary near its middle (Whisper's
word timestamps) and transcribed again, as a speculative turn at an inner pause
would be. For thresholds on the log-probability it reports the share of whole
utterances judged complete (a short endpoint: good) and of cut ones judged complete
(a premature endpoint: bad), a transcript ending in "..." or "-" being unfinished
whatever the LLM says, and the CPU time of one estimate (it prefills what the reply
needs anyway). Smart Turn's shares are reported too.

Writes eval/out/eot.json.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from eval.corpus import load_manifest
from eval.stats import percentiles
from pipeline.audio import read_wav
from pipeline.config import load_config
from pipeline.endpoint import unfinished_text
from pipeline.conversation import Conversation
from pipeline.events import ChatMessage

OUT = Path(__file__).resolve().parent / "out"
THRESHOLDS = (-0.5, -1.0, -1.5, -2.0, -2.5, -3.0, -4.0)
ACOUSTIC_THRESHOLDS = (0.3, 0.5, 0.7, 0.8, 0.9)


def main() -> None:
    from faster_whisper import WhisperModel

    from stages.asr_faster_whisper import resolve_model
    from stages.eot_smart_turn import SmartTurn
    from stages.llm_llama_cpp import LlamaCppLLM

    config = load_config("configs/default.yaml")
    llm = LlamaCppLLM(config.llm)
    asyncio.run(llm.start())
    whisper = WhisperModel(str(resolve_model(config.asr.model)), device="cpu",
                           compute_type="int8", cpu_threads=2)
    # what the pipeline's prompts start with (system prompt and primer)
    head = Conversation(llm, None).system(None)
    smart_turn = SmartTurn()
    smart_turn.load()
    rows, cpu_ms = [], []
    for clip in load_manifest():
        if clip.duration_s > 12:
            continue
        audio = read_wav(clip.path)
        segments, _ = whisper.transcribe(audio, language="en", word_timestamps=True,
                                         beam_size=1)
        words = [w for s in segments for w in s.words]
        if len(words) < 4:
            continue
        whole = "".join(w.word for w in words).strip()
        cut_at = words[len(words) // 2 - 1].end
        cut_segments, _ = whisper.transcribe(audio[:int((cut_at + 0.05) * 16000)],
                                             language="en", beam_size=1)
        cut = "".join(s.text for s in cut_segments).strip()
        sentence, token = [], []
        for text in (whole, cut):
            messages = (*head, ChatMessage("user", text))
            t0 = time.process_time()
            # as the pipeline reads it: short answers by the end-of-turn token
            as_sentence = len(text.split()) >= config.pipeline.eot_sentence_min_words
            sentence.append(llm.end_of_turn_logprob(messages, sentence_end=as_sentence))
            cpu_ms.append((time.process_time() - t0) * 1000)
            token.append(llm.end_of_turn_logprob(messages))
        # the acoustic signal on the audio a pause would give: up to the last word + 96 ms
        heard = [audio[:int((words[-1].end + 0.096) * 16000)],
                 audio[:int((cut_at + 0.096) * 16000)]]
        acoustic = [smart_turn.probability(a) for a in heard]
        rows.append({"clip": clip.id, "whole": whole, "cut": cut,
                     "whole_logprob": sentence[0], "cut_logprob": sentence[1],
                     "whole_token_logprob": token[0], "cut_token_logprob": token[1],
                     "whole_smart_turn": acoustic[0], "cut_smart_turn": acoustic[1]})
        print(f"{clip.id:40s} whole {sentence[0]:6.2f} ({token[0]:6.2f}) {acoustic[0]:.2f}  "
              f"cut {sentence[1]:6.2f} ({token[1]:6.2f}) {acoustic[1]:.2f} {cut[-40:]!r}")

    def share(key, th, with_rule=True):
        text = key.split("_")[0]
        return sum(r[key] >= th and not (with_rule and unfinished_text(r[text]))
                   for r in rows) / len(rows)

    table = [{"threshold": th,
              "whole_judged_complete": share("whole_logprob", th),
              "cut_judged_complete": share("cut_logprob", th),
              "token_whole_judged_complete": share("whole_token_logprob", th),
              "token_cut_judged_complete": share("cut_token_logprob", th),
              "token_cut_judged_complete_without_text_rule":
                  share("cut_token_logprob", th, with_rule=False)}
             for th in THRESHOLDS]
    acoustic_table = []
    for th in ACOUSTIC_THRESHOLDS:
        acoustic_table.append({
            "threshold": th,
            "whole_judged_complete": sum(r["whole_smart_turn"] >= th for r in rows) / len(rows),
            "cut_judged_complete": sum(r["cut_smart_turn"] >= th for r in rows) / len(rows)})
    result = {"clips": len(rows), "cpu_ms_per_estimate": percentiles(cpu_ms), "table": table,
              "smart_turn_table": acoustic_table,
              "smart_turn_cpu_ms": percentiles(smart_turn.cpu_ms), "rows": rows}
    print(f"\n{len(rows)} clips; CPU per estimate p50 {result['cpu_ms_per_estimate']['p50']:.0f} ms")
    print("(judged complete: at or above the threshold, and not trailing off by the text rule)")
    print("| log P threshold | sentence end (default): whole | cut | end-of-turn token "
          "after the punctuated text: whole | cut |")
    print("|---:|---:|---:|---:|---:|")
    for r in table:
        print(f"| {r['threshold']:g} | {r['whole_judged_complete']:.0%} | "
              f"{r['cut_judged_complete']:.0%} | {r['token_whole_judged_complete']:.0%} | "
              f"{r['token_cut_judged_complete']:.0%} |")
    print("\n| Smart Turn threshold | whole judged complete | cut judged complete |")
    print("|---:|---:|---:|")
    for r in acoustic_table:
        print(f"| {r['threshold']:g} | {r['whole_judged_complete']:.0%} | "
              f"{r['cut_judged_complete']:.0%} |")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "eot.json").write_text(json.dumps(result, indent=2))
    asyncio.run(llm.aclose())


if __name__ == "__main__":
    main()

"""Text made from a chat: answer footers, stored stats, the /stats page and Markdown exports."""

import time
from dataclasses import asdict

from ..engine.events import Memory, Stats
from ..history import INCOMPLETE, Chat

FINISH_NOTES = {
    "cancelled": "stopped",
    "length": "max tokens reached",
    "timeout": "timed out",
    "repetition": "stopped: repeating itself",
    "nan": "stopped: invalid logits",
    "error": "failed",
}


def footer_for(stats: dict, finish_reason: str | None) -> tuple[str, str]:
    """(footer line, css class) for an answer's stats as stored in the history."""
    parts = []
    if stats.get("generation_tokens"):
        parts += [
            f"TTFT {stats.get('ttft_ms', 0):.0f} ms",
            f"{stats.get('decode_tps', 0):.1f} tok/s",
            f"{stats['generation_tokens']} tokens",
        ]
    note = FINISH_NOTES.get(finish_reason or "")
    if finish_reason == INCOMPLETE:
        note = "interrupted"
    if note:
        parts.append(note)
    css = {"cancelled": "stopped", INCOMPLETE: "stopped", "error": "failed", "timeout": "failed"}
    return " · ".join(parts), css.get(finish_reason or "", "")


def stored_stats(stats: Stats | None, model: str | None) -> dict:
    if stats is None:
        return {"model": model} if model else {}
    return {**asdict(stats), "model": model}


def stats_markdown(info, stats: Stats | None, turns: list[Stats], memory: Memory | None) -> str:
    """The /stats page: the model (a loader.ModelInfo or None), the last answer, this session, memory."""
    lines = ["# Stats", ""]
    if info is not None:
        lines += [
            f"**Model** {info.name} · {info.quantization} · {info.kernels} · "
            f"{info.size_gb:.2f} GB · context {info.context_length}",
            "",
        ]
    if stats is None:
        lines.append("No answer yet in this session.")
    else:
        lines += [
            "## Last answer",
            "",
            "| measure | value |",
            "| --- | --- |",
            f"| TTFT | {stats.ttft_ms:.0f} ms |",
            f"| prefill | {stats.prefill_tps:.1f} tok/s ({stats.prompt_tokens} prompt tokens, "
            f"{stats.cached_tokens} from the KV cache) |",
            f"| decode | {stats.decode_tps:.1f} tok/s ({stats.generation_tokens} tokens) |",
            f"| MLX peak memory | {stats.peak_memory_gb:.3f} GB |",
            f"| process RSS | {stats.rss_gb:.3f} GB |",
            f"| finish | {stats.finish_reason} |",
            f"| seed | {stats.seed} |",
        ]
        rates = [turn.decode_tps for turn in turns if turn.generation_tokens > 1]
        lines += [
            "",
            "## This session",
            "",
            f"{len(turns)} answers, {sum(turn.generation_tokens for turn in turns)} tokens"
            + (f", mean decode {sum(rates) / len(rates):.1f} tok/s" if rates else ""),
        ]
    if memory is not None:
        lines += [
            "",
            "## Memory",
            "",
            f"MLX active {memory.active_gb:.3f} GB · peak {memory.peak_gb:.3f} GB · "
            f"cache {memory.cache_gb:.3f} GB · RSS {memory.rss_gb:.3f} GB · "
            f"available {memory.system_available_gb:.1f} GB",
        ]
    return "\n".join(lines)


def export_markdown(chat: Chat, messages) -> str:
    names = {"user": "You", "assistant": "squish", "system": "System", "tool": "Tool"}
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(chat.created))
    lines = [f"# {chat.title or 'squish chat'}", "", f"_{created} · {chat.model or 'default model'}_", ""]
    if chat.system_prompt:
        lines += ["## System", "", chat.system_prompt, ""]
    for message in messages:
        lines += [f"## {names.get(message.role, message.role)}", ""]
        if getattr(message, "thinking", None):
            lines += ["<details><summary>Thinking</summary>", "", message.thinking, "", "</details>", ""]
        lines += [message.content, ""]
        if message.role == "assistant":
            footer, _ = footer_for(message.stats, message.finish_reason)
            if footer:
                lines += [f"_{footer}_", ""]
    return "\n".join(lines)

"""`squish -p PROMPT`: one answer, streamed to stdout, stats on stderr (or one JSON object).

Every answer is saved as a chat in the app's history unless `--no-save`, with its KV cache
beside it (squish/engine/prompt_cache.py), so `squish -c -p` (the last chat) and `--chat ID`
continue it and prefill only the new message. A thinking model's `<think>` block goes to
stderr (not with `--quiet`), never into the answer on stdout; `--json` carries it as "thinking".
"""

import json
import sys

from .parser import UsageError, fail

DIM, RESET = "\033[2m", "\033[0m"


def read_prompt(arg: str) -> str:
    if arg != "-":
        return arg
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"standard input is not valid UTF-8 (byte {exc.start})") from None


def drafts(stats) -> str:
    """`` (12/20 drafted kept)`` when prompt-lookup drafts were checked, else nothing."""
    if not stats.draft_tokens:
        return ""
    return f" ({stats.accepted_tokens}/{stats.draft_tokens} drafted kept)"


def note(text: str) -> None:
    print(f"squish: {text}", file=sys.stderr)


def open_chat(args):
    """(history, chat): the chat to continue (-c, --chat) or None for a new one; no history at all
    with --no-save and nothing to continue."""
    from ..errors import EngineFailure, UserError
    from ..history import FILE, History, HistoryError
    from ..models.store import squish_home

    if args.continue_chat and args.chat is not None:
        raise UsageError("--continue and --chat both pick a chat: give one")
    if args.no_save and not args.continue_chat and args.chat is None:
        return None, None
    try:
        history = History(squish_home() / FILE)
    except HistoryError as exc:
        raise EngineFailure(str(exc)) from None
    chat = None
    if args.chat is not None:
        chat = history.chat(args.chat)
        if chat is None or not chat.message_count:
            history.close()
            raise UserError(f"no chat {args.chat}: squish chats lists them")
    elif args.continue_chat:
        chat = history.last_chat()
        if chat is None:
            history.close()
            raise UserError("no saved chat to continue: squish -p starts one")
    return history, chat


def load_model(engine, explicit: str | None, chat_model: str | None, default: str | None, chatty: bool):
    """Load the model asked for (--model), else the chat's, else the default; a chat's model that
    is gone falls back to the default with a warning. Returns (ModelInfo, the name to save) or an
    exit code."""
    from ..engine.events import Error, Loaded, Status
    from ..errors import SquishError
    from ..models import store

    stream, name = None, explicit or default
    if explicit is None and chat_model:
        try:
            stream, name = store.load(engine, chat_model), chat_model
        except SquishError as exc:
            note(f"warning: this chat's model is not available ({exc}); continuing with the default model")
    stream = stream or store.load(engine, name)
    info = None
    for event in stream:
        if isinstance(event, Status) and chatty and sys.stderr.isatty():
            print(f"\r\033[2K{event.text}…", end="", file=sys.stderr, flush=True)
        elif isinstance(event, Error):
            return fail(event.message, event.exit_code)
        elif isinstance(event, Loaded):
            info = event.info
    if chatty and sys.stderr.isatty():
        print("\r\033[2K", end="", file=sys.stderr, flush=True)
    return info, saved_name(name, info)


def saved_name(name: str | None, info) -> str:
    """What the chat records as its model: the name asked for (a path made absolute), or the loaded one's."""
    from pathlib import Path

    if name is None:
        return info.name
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def one_shot(args) -> int:
    prompt = read_prompt(args.prompt)
    history, chat = open_chat(args)
    try:
        return answer(args, prompt, history, chat)
    finally:
        if history is not None:
            history.close()


def answer(args, prompt: str, history, chat) -> int:
    from ..engine.engine import ChatRequest, Engine, validate
    from ..engine.events import ContextTrimmed, Done, Error, Notice, Stats, Thinking, Token
    from ..models import settings
    from ..tui.transcript import stored_stats

    system = args.system if args.system is not None else (chat.system_prompt if chat else None)
    messages = [{"role": "system", "content": system}] if system else []
    messages += history.context(chat.id) if chat else []
    messages.append({"role": "user", "content": prompt})
    request = ChatRequest(
        messages,
        session="one-shot",
        max_tokens=args.max_tokens,
        temperature=args.temp,
        top_p=args.top_p,
        seed=args.seed,
        timeout_s=args.timeout,
        context_size=args.ctx if args.ctx is not None else settings.context_size(),
        cache_file=history.cache_path(chat.id) if chat else None,
    )
    validate(request)  # bad input fails here, before a model is loaded (UserError: exit 1)

    chatty = not (args.quiet or args.json)
    engine = Engine()
    loaded = load_model(engine, args.model, chat.model if chat else None, args.default_model, chatty)
    if isinstance(loaded, int):
        return loaded
    info, model_name = loaded
    if args.think is not None:
        if info.thinking_switch:
            request.template_args["enable_thinking"] = args.think == "on"
        elif chatty:
            note(f"note: {info.name}'s chat template has no thinking switch; --think is ignored")

    saving = not args.no_save
    if saving:
        if chat is None:
            chat = history.create_chat(model_name, system)
        elif args.system is not None and args.system != chat.system_prompt:
            history.set_system_prompt(chat.id, args.system)
        history.add_message(chat.id, "user", prompt)

    stream = engine.generate(request)
    text, thinking, notices = [], [], []
    stats, error, finish = None, None, ""
    dim = sys.stderr.isatty()
    shown_thinking = chatty

    def show_thinking(piece: str) -> None:
        sys.stderr.write(f"{DIM}{piece}{RESET}" if dim else piece)
        sys.stderr.flush()

    try:
        for event in stream:
            if isinstance(event, Token):
                if thinking and not text and shown_thinking:
                    sys.stderr.write("\n")
                text.append(event.text)
                if not args.json:
                    sys.stdout.write(event.text)
                    sys.stdout.flush()
            elif isinstance(event, Thinking):
                thinking.append(event.text)
                if shown_thinking:
                    show_thinking(event.text)
            elif isinstance(event, (Notice, ContextTrimmed)):
                notices.append(
                    event.text
                    if isinstance(event, Notice)
                    else f"{event.left_out} earlier messages are left out to fit the context of {event.context_size} tokens"
                )
                if chatty:
                    note(f"note: {notices[-1]}")
            elif isinstance(event, Stats):
                stats = event
            elif isinstance(event, Error):
                error = event
            elif isinstance(event, Done):
                finish = event.finish_reason
    except KeyboardInterrupt:
        stream.cancel()
        for event in stream:
            if isinstance(event, Token):
                text.append(event.text)
                if not args.json:
                    sys.stdout.write(event.text)
        if not args.json:
            sys.stdout.write("\n")
        if saving and (text or thinking):
            history.add_message(chat.id, "assistant", "".join(text), "cancelled", thinking="".join(thinking))
        print("squish: stopped", file=sys.stderr)
        return 130
    if thinking and not text and shown_thinking:
        sys.stderr.write("\n")
    answer_text = "".join(text)
    if saving and error is None:
        history.add_message(
            chat.id, "assistant", answer_text, finish, stored_stats(stats, model_name), "".join(thinking)
        )
        history.set_model(chat.id, model_name)
        notices += save_cache(engine, request.session, history.cache_path(chat.id), chatty)
    if args.json:
        if error is None:
            print(
                json.dumps(
                    {
                        "text": answer_text,
                        "thinking": "".join(thinking),
                        "model": info.name,
                        "chat": chat.id if saving else None,
                        "finish_reason": stats.finish_reason,
                        "stats": stats.public(),
                        "notices": notices,
                    }
                )
            )
    elif text:  # end the answer's line; an answer that never started leaves stdout empty
        sys.stdout.write("\n")
        sys.stdout.flush()
    if error is not None:
        return fail(error.message, error.exit_code)
    if chatty and stats is not None:
        cached = f" · {stats.cached_tokens} cached" if stats.cached_tokens else ""
        print(
            f"[{info.name} {info.quantization} {info.kernels} · TTFT {stats.ttft_ms:.0f} ms · "
            f"prefill {stats.prefill_tps:.1f} tok/s · decode {stats.decode_tps:.1f} tok/s · "
            f"{stats.generation_tokens} tokens{cached}{drafts(stats)} · context {stats.prompt_tokens}/{stats.context_size} · "
            f"peak {stats.peak_memory_gb:.2f} GB · seed {stats.seed} · {finish}"
            + (f" · chat {chat.id}]" if saving else "]"),
            file=sys.stderr,
        )
    if finish in ("repetition", "nan"):
        print(f"squish: warning: generation stopped early ({finish})", file=sys.stderr)
    return 0


def save_cache(engine, session: str, path, chatty: bool) -> list[str]:
    """Save the chat's KV cache; a failure is a warning (the chat itself is saved). Returns notes."""
    from ..engine.events import Error, Notice
    from ..models import settings

    notes = []
    for event in engine.save_session(session, path, settings.kv_cache_limit_bytes()):
        if isinstance(event, Error):
            note(f"warning: {event.message} (the chat is saved; continuing it prefills its history)")
            notes.append(event.message)
        elif isinstance(event, Notice):
            notes.append(event.text)
            if chatty:
                note(f"note: {event.text}")
    return notes

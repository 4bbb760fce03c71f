"""Content of the Claude Code CLI's messages: content blocks, tool results, the reply text.

Pure pieces of :class:`~.decode.ClaudeDecoder`: reading one content block, gathering the
blocks of one assistant message (the CLI prints one line per block), and joining the main
agent's text into one reply.
"""

from __future__ import annotations

from typing import Any

from orchestrator.backends.fields import dict_or_empty, str_or_none
from orchestrator.events import (
    AssistantMessage,
    ContentBlock,
    TextBlock,
    TextDelta,
    TextRetracted,
    ThinkingBlock,
    ToolUseBlock,
)

BLOCK_SEPARATOR = "\n\n"
"""Between consecutive text blocks in the reply's deltas, so a job's text reads as paragraphs."""

BlockKey = tuple[str | None, Any]
"""A streamed text block: (message id, block index)."""


def content_block(raw: Any) -> ContentBlock | None:
    """One block of a message's ``content``, or None when it is of a type we do not know."""
    block = dict_or_empty(raw)
    match block.get("type"):
        case "text":
            return TextBlock(str_or_none(block.get("text")) or "")
        case "thinking":
            return ThinkingBlock(str_or_none(block.get("thinking")) or "")
        case "tool_use":
            tool_input = block.get("input")
            return ToolUseBlock(
                call_id=str_or_none(block.get("id")) or "",
                name=str_or_none(block.get("name")) or "",
                input=tool_input if isinstance(tool_input, dict) else {"input": tool_input},
            )
        case _:
            return None


def tool_result_text(content: Any) -> str:
    """A tool result's content as text: a string as is, text blocks joined, others named."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    parts = []
    for item in content if isinstance(content, list) else [content]:
        block = dict_or_empty(item)
        if block.get("type") == "text":
            parts.append(str_or_none(block.get("text")) or "")
        else:
            parts.append(f"[{str_or_none(block.get('type')) or type(item).__name__}]")
    return "\n".join(parts)


class MessageGatherer:
    """Gathers the content blocks of the assistant message being printed, one line at a time.

    A message is complete when a line of another message arrives (:meth:`begin` returns it) or
    when the decoder says so (:meth:`flush`: its ``message_stop``, a ``user`` or ``result`` line,
    the end). A message without blocks is dropped: nothing was said.
    """

    def __init__(self) -> None:
        self._message_id: str | None = None
        self._blocks: list[ContentBlock] | None = None  # None: no message under way

    def gathering(self, message_id: str | None) -> bool:
        """Whether the message under way is ``message_id``."""
        return self._blocks is not None and self._message_id == message_id

    def begin(self, message_id: str | None) -> list[AssistantMessage]:
        """Gather the blocks that follow into ``message_id``; returns the message this completes.

        A line without a message id always starts a new message.
        """
        done = []
        if self._blocks is not None and (message_id is None or self._message_id != message_id):
            done = self.flush()
        if self._blocks is None:
            self._message_id, self._blocks = message_id, []
        return done

    def add(self, block: ContentBlock) -> None:
        """One more block of the message under way (call :meth:`begin` first)."""
        if self._blocks is None:  # no begin(): the block starts a message of unknown id
            self._message_id, self._blocks = None, []
        self._blocks.append(block)

    def flush(self) -> list[AssistantMessage]:
        """The message under way, complete (none if it had no blocks); nothing is under way after."""
        message_id, blocks = self._message_id, self._blocks
        self._message_id, self._blocks = None, None
        if not blocks:
            return []
        return [AssistantMessage(content=tuple(blocks), message_id=message_id)]


class ReplyText:
    """Turns pieces of the main agent's text into :class:`TextDelta` events of one reply.

    A piece that starts a new text block after earlier text is prefixed with
    :data:`BLOCK_SEPARATOR`; pieces of one streamed block follow each other as they are.
    """

    def __init__(self) -> None:
        self._block: BlockKey | None = None
        self._started = False
        self.sent: dict[BlockKey | None, int] = {}  # characters sent per block, separators included
        self._texts: dict[BlockKey, str] = {}  # the text of each streamed block, without separators

    def delta(self, block_key: BlockKey | None, text: str) -> TextDelta:
        """The delta for ``text``; ``block_key`` names its streamed block, None a whole block."""
        if block_key is not None:
            self._texts[block_key] = self._texts.get(block_key, "") + text
        new_block = block_key is None or block_key != self._block
        self._block = block_key
        if new_block and self._started:
            text = BLOCK_SEPARATOR + text
        self._started = True
        self.sent[block_key] = self.sent.get(block_key, 0) + len(text)
        return TextDelta(text)

    def streamed_blocks(self, message_id: str | None) -> list[str]:
        """The text streamed for each block of message ``message_id`` still in the reply, in order."""
        return [text for key, text in self._texts.items() if key[0] == message_id]

    def replace(self, text: str) -> list[TextRetracted | TextDelta]:
        """Events that make ``text`` the whole reply: every character sent so far taken back,
        then ``text`` as one delta (the CLI's structured output replacing its prose)."""
        chars = sum(self.sent.values())
        self.sent = {None: len(text)}
        self._texts = {}
        self._block, self._started = None, True
        return [*([TextRetracted(chars)] if chars else []), TextDelta(text)]

    def retract(self, message_id: str | None, from_index: int) -> TextRetracted | None:
        """Take back the text sent for blocks ``from_index`` on of message ``message_id``."""
        return self._take_back(
            [k for k in self._texts if k[0] == message_id and isinstance(k[1], int) and k[1] >= from_index]
        )

    def retract_message(self, message_id: str | None) -> TextRetracted | None:
        """Take back all the text streamed for message ``message_id``."""
        return self._take_back([k for k in self._texts if k[0] == message_id])

    def _take_back(self, gone: list[BlockKey]) -> TextRetracted | None:
        # Only the end of the reply can be taken back: callers retract a message before any
        # later text is sent.
        chars = sum(self.sent.pop(key, 0) for key in gone)
        for key in gone:
            del self._texts[key]
        if not self.sent:
            self._started = False  # nothing left: the next text starts the reply afresh
        self._block = None
        return TextRetracted(chars) if chars else None

"""The words labels are made of and must not hold: stopwords, and the speaker names and chat-template
tokens of transcripts, which never enter a label (`strip_role_markers` removes speaker prefixes)."""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z][a-z0-9']{2,}")
# Function words carry no topic; they would top every latent's keyword list.
STOPWORDS = frozenset("""
a about above after again against all also am an and any are aren't as at be because been before being
below between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during
each few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers
herself him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself just let's me
more most mustn't my myself no nor not now of off on once only or other ought our ours ourselves out over own
same shan't she she'd she'll she's should shouldn't so some such than that that's the their theirs them
themselves then there there's these they they'd they'll they're they've this those through to too under
until up very was wasn't we we'd we'll we're we've were weren't what what's when when's where where's which
while who who's whom why why's will with won't would wouldn't you you'd you'll you're you've your yours
yourself yourselves one get got like really much many even still well back way make made new said says
""".split())
# Speaker names and chat-template tokens. In chat transcripts (hh-rlhf's "Human: ... Assistant: ...",
# ChatML, the Llama and Gemma templates) they say who speaks, not what is said, and they are in every
# transcript, so they topped the peak tokens and keywords of any latent that fires in chats (a quarter
# of the first shipped labels). In labelled text such a word is taken to be only a role marker: it is
# never a peak token or a keyword, even where it is also an ordinary word ("user interface").
ROLE_MARKERS = frozenset({
    "human", "assistant", "user", "system",  # speakers
    "inst", "im_start", "im_end", "endoftext", "bos", "eos", "pad", "unk",  # template tokens
    "start_of_turn", "end_of_turn", "begin_of_text", "end_of_text", "eot_id", "start_header_id",
    "end_header_id",
})
# Template tokens as they appear in text (lower-cased): `<|im_start|>`, `[INST]`, `<<SYS>>`, `</s>`,
# `<start_of_turn>`, or bare `im_start`. Removed before words are counted, so their pieces ("start",
# "turn", "header") do not become keywords either.
_TEMPLATE = re.compile(r"<\|[a-z_]+\|>|\[/?inst\]|<</?sys>>|</?s>|<(?:start_of_turn|end_of_turn|bos|eos|pad|unk)>|"
                       + r"\b(?:" + "|".join(sorted(m for m in ROLE_MARKERS if "_" in m)) + r")\b")
# A speaker prefix at a line start: `Human:`, `Assistant:`, `### User:`, `**System:**`.
_SPEAKER = re.compile(r"^[ \t]*(?:#{1,6}[ \t]*)?(?:\*\*)?(?:human|assistant|user|system)(?:\*\*)?[ \t]*:"
                      r"(?:\*\*)?[ \t]*", re.IGNORECASE | re.MULTILINE)



def strip_role_markers(text: str) -> str:
    """The text without speaker prefixes at line starts (`Human:`, `Assistant:`, `User:`, `System:`,
    `### Human:`, `**User:**`, any case), so chat transcripts can train an SAE (or be labelled)
    on what is said rather than on who says it. Only prefixes go: a speaker word inside a sentence
    ("the user clicks") stays, as does the rest of the line.

    Examples:
        >>> strip_role_markers("Human: Is it raining?\\n\\nAssistant: Yes, in London.")
        'Is it raining?\\n\\nYes, in London.'
    """
    return _SPEAKER.sub("", text)


def _is_role_marker(token: str) -> bool:
    """A peak token that only marks a speaker or a template: `Human`, ` Assistant:`, `<|im_start|>`,
    `[INST]`, `</s>`, `### User`."""
    token = token.strip().lower()
    return bool(_TEMPLATE.fullmatch(token)) or token.strip("<>|[]/#:*_ ") in ROLE_MARKERS

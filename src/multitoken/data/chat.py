"""Chat prompts: a list of messages rendered with the model's own chat template (the Jinja template Hugging Face
folders and GGUF files carry), then tokenized with its special tokens recognized (`<|im_start|>` is one token in a
template, while the same characters in a training document stay plain text)."""

from __future__ import annotations

from functools import lru_cache

from multitoken.errors import ConfigError

ROLES = ("system", "user", "assistant")  # the roles a conversation may hold: one rule for distill, chat and serve


@lru_cache(maxsize=8)
def _compiled(template: str):
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):  # templates call this to refuse a conversation they cannot render
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)  # as transformers renders them
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def render_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """The prompt text for these messages ({"role": ..., "content": ...}), ready for the assistant's answer."""
    from jinja2.exceptions import TemplateError

    template = tokenizer.chat_template
    if not template:
        raise ConfigError("this model's tokenizer has no chat template: drop --chat and give a plain --prompt")
    try:
        return _compiled(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                          bos_token=getattr(tokenizer, "bos_token", None) or "",
                                          eos_token=getattr(tokenizer, "eot_token", ""))
    except TemplateError as e:
        raise ConfigError(f"the model's chat template refused the messages: {e}") from None


def encode_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of the rendered conversation, special tokens as single ids."""
    return tokenizer.encode_special(render_chat(tokenizer, messages, add_generation_prompt))

"""An adapter module with functions but no @snakepit.tool: a boot error."""


def forgot_the_decorator(text: str) -> int:
    return len(text)


def another(x: int) -> int:
    return x * 2

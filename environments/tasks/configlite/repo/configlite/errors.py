class ParseError(ValueError):
    """The configuration text is malformed; `line_number` is 1-based."""

    def __init__(self, message: str, line_number: int):
        super().__init__(f"line {line_number}: {message}")
        self.line_number = line_number

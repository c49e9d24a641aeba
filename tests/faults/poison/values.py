"""Names that lead to something other than a function."""

NOT_CALLABLE = 3
NOTHING = None
A_LIST = [1, 2, 3]


class Bomb:
    """Calling the class works; calling what it returns does not exist as a task."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise ValueError("Bomb() always raises")

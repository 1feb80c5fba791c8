"""Names of the per-resolution parts of both networks (`inputs.16x16`, `final.8x8`, ...)."""


def res_key(r: int) -> str:
    return f"{r}x{r}"

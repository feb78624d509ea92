"""The shares of a patch source held out by default for validation and for test (of its
slides, or of its patches when it has none), apart from the splitting code so that
`nar data inspect --help` shows them without loading it."""

VAL_FRACTION = 0.2
TEST_FRACTION = 0.2

"""The typer command line: parse, call one core function, render. No logic worth testing lives here."""

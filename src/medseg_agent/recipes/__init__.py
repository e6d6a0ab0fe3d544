"""Recipes: whole pipelines that chain the layer-4 packages (data -> expert -> export -> training ->
evaluation) behind one command. They sit above ``training`` and ``exports`` (which import each other's
pieces in one direction only) and below the CLI."""

"""Captions the text-path tests embed: a few shapes the bundled models know, and ordinary scenes."""

CAPTIONS = [
    "a red circle on a white background", "two blue squares", "a green triangle in the grass",
    "a yellow star at night", "an orange cross on a wall", "a purple car on a highway",
    "a dog running on the beach", "a cat sleeping on a sofa", "a bowl of fruit on a table",
    "a snowy mountain under a clear sky", "a city street in the rain", "a plate of pasta",
]

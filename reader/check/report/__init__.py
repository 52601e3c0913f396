"""The checker's pictures of a checked split, apart from the checks (matplotlib only when drawn).

- contact_sheet: `--sheet`, sample records drawn with their grid, so a person sees targets sit on faces
- dataset: `--report=DIR`, the checked split in plots, and the files that hold them
- faces: the report's faces, every stored box and its role, read again from the check
- numbers: the numbers behind each plot of the report, and its caption
- plots: the drawing of each plot
"""

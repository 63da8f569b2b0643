"""`python scripts/make_tiny_model.py --out DIR`: the embedded tiny model (see model_zoo/tiny.py)."""

from model_zoo.tiny import main

if __name__ == "__main__":
    main()

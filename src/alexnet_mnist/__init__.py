"""AlexNet on MNIST: the library behind the DVC stages in stages/. Importing it does no work."""

from mgrpo.cli import main

main()

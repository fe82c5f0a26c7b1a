from hf_mha_cli.main import main

main()

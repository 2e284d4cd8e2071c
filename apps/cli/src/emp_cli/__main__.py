from emp_cli.main import main

main()

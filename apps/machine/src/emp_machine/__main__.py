from emp_machine.main import main

main()
